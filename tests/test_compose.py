"""docker-compose.yml: generated, valid Compose, and running what the native stack runs.

No Docker engine runs here, so the file is checked against the Compose specification's schema
(tests/schemas), and each service's command, settings and ports are checked against the native
code that the same command runs; the TLS proxy's configuration runs in Debian's nginx in front
of a real portal.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nifti_archive import compose, installation
from nifti_archive.archive import Archive
from nifti_archive.settings import Settings, load_settings
from orthanc_plugin.deployment import DEPLOYMENT_VAR, PASSWORD_PLACEHOLDER, deployment_config, orthanc_config
from portal import serve
from testbed import TEST_PASSWORD_COST
from testbed.children import stop_child
from testbed.ldap_directory import _certificates
from testbed.portal import Portal, start_portal
from testbed.ports import free_port
from testbed.postgres import PostgresServer
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[1]
NORA = ROOT / ".venv" / "bin" / "nora"
SCHEMA = json.loads((Path(__file__).with_name("schemas") / "compose-spec.json").read_text())
OURS = [compose.Service.INIT, compose.Service.ORTHANC, compose.Service.WORKER, compose.Service.PORTAL,
        compose.Service.ASSISTANT, compose.Service.DROPFOLDERS]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _service(document: dict[str, Any], which: compose.Service) -> dict[str, Any]:
    service: dict[str, Any] = document["services"][which.value]
    return service


def _settings_of(document: dict[str, Any], which: compose.Service) -> Settings:
    return load_settings(_service(document, which)["environment"])


def test_committed_file_is_what_nora_admin_compose_prints(tmp_path: Path) -> None:
    # Whatever the machine it runs on has configured: the file describes the production deployment.
    printed = subprocess.run([str(NORA), "--admin", "compose"], env={"NORTHANC_VAR": str(tmp_path / "var")},
                             capture_output=True, text=True, check=True, timeout=120)
    assert (ROOT / "docker-compose.yml").read_text() == printed.stdout


def test_file_is_valid_compose(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(document)


def test_the_schema_refuses_what_compose_would(document: dict[str, Any]) -> None:
    """The validation has teeth: a misspelt key and a condition Compose does not know are errors."""
    misspelt = copy.deepcopy(document)
    misspelt["services"]["portal"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError, match="restart_policy"):
        jsonschema.Draft7Validator(SCHEMA).validate(misspelt)
    unknown = copy.deepcopy(document)
    unknown["services"]["orthanc"]["depends_on"]["postgres"]["condition"] = "service_ready"
    with pytest.raises(jsonschema.ValidationError, match="service_ready"):
        jsonschema.Draft7Validator(SCHEMA).validate(unknown)


def test_every_server_setup_sh_starts_runs_in_the_foreground_with_its_status_as_health(document: dict[str, Any]) -> None:
    run_stack = (ROOT / "setup.sh").read_text().split("run_stack() {")[1].split("\n}\n")[0]
    started = re.findall(r"^\s*\.venv/bin/python -m (\S+) start$", run_stack, re.MULTILINE)
    assert sorted(started) == sorted([*compose.NATIVE_SERVICES.values(), *compose.NATIVE_ONLY])
    for which, module in compose.NATIVE_SERVICES.items():
        service = _service(document, which)
        assert service["command"] == [compose.PYTHON, "-m", module, "foreground"]
        assert service["healthcheck"]["test"] == ["CMD", compose.PYTHON, "-m", module, "status"]
        assert service["restart"] == "unless-stopped"
    assert ".venv/bin/nora --admin init" in run_stack
    assert _service(document, compose.Service.INIT)["command"][-1].endswith(f"exec {compose.NORA} --admin init")
    assert _service(document, compose.Service.WORKER)["command"] == [compose.NORA, "worker"]


def test_containers_load_the_native_settings_with_the_production_differences_only(document: dict[str, Any]) -> None:
    native = compose.NATIVE
    production = replace(native, **compose.PRODUCTION)
    for which in OURS:
        expected = replace(production, orthanc_url=native.orthanc_url) if which is compose.Service.ORTHANC else production
        assert _settings_of(document, which) == expected, which
    # The deployment's var is the one the committed orthanc.json describes.
    assert compose.VAR == DEPLOYMENT_VAR
    assert production.secrets_dir == compose.PGPASSFILE.parent


def test_orthanc_runs_orthanc_json_with_the_documented_production_differences(document: dict[str, Any]) -> None:
    settings = replace(_settings_of(document, compose.Service.ORTHANC), orthanc_password=PASSWORD_PLACEHOLDER)
    generated, committed = orthanc_config(settings), deployment_config()
    differences = {key for key in generated.keys() | committed.keys() if generated.get(key) != committed.get(key)}
    # The plugin's paths are the image's, where orthanc.json has placeholders.
    assert differences - {"Northanc", "PythonScript"} == {"DicomAlwaysAllowStore", "DicomAlwaysAllowEcho", "PostgreSQL",
                                                          "Plugins", "RemoteAccessAllowed"}
    assert generated["DicomAlwaysAllowStore"] is False and generated["DicomAlwaysAllowEcho"] is False
    # The portal and the workers call its REST API from their own containers, with its credentials.
    assert generated["RemoteAccessAllowed"] is True and generated["AuthenticationEnabled"] is True
    # Its index in the database the postgres service creates for it; the password is in no URL.
    assert generated["Plugins"] == [*committed["Plugins"], "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"]
    index = generated["PostgreSQL"]
    assert isinstance(index, dict) and index["EnableIndex"] is True
    assert index["ConnectionUri"] == "postgresql://northanc@postgres:5432/orthanc"
    assert document["configs"]["postgres-init"]["content"] == "CREATE DATABASE orthanc OWNER northanc;\n"
    # Orthanc's storage is a volume of its own, mounted where the configuration puts it.
    assert f"orthanc-storage:{generated['StorageDirectory']}" in _service(document, compose.Service.ORTHANC)["volumes"]


def test_only_dicom_and_https_are_published(document: dict[str, Any]) -> None:
    published = {name: service.get("ports", []) for name, service in document["services"].items() if service.get("ports")}
    dicom = _settings_of(document, compose.Service.ORTHANC).orthanc_dicom_port
    assert published == {"orthanc": [f"{dicom}:{dicom}"], "proxy": ["443:443", "80:80"]}


def test_portal_listens_where_the_proxy_sends_and_the_assistant_shares_its_loopback(
        document: dict[str, Any], tmp_path: Path) -> None:
    settings = _settings_of(document, compose.Service.PORTAL)
    argv = serve.gunicorn_command(replace(settings, var_dir=tmp_path, log_dir=tmp_path / "log"))
    assert argv[argv.index("--bind") + 1] == f"0.0.0.0:{settings.portal_port}"
    conf = document["configs"]["nginx"]["content"].replace("$$", "$")
    assert conf == compose.nginx_conf(settings, compose.production_front(settings))
    assert f"proxy_pass http://portal:{settings.portal_port};" in conf
    assert f"proxy_read_timeout {argv[argv.index('--timeout') + 1]}s;" in conf
    assert f"client_max_body_size {settings.upload_max_bytes};" in conf
    assert _service(document, compose.Service.ASSISTANT)["network_mode"] == "service:portal"


def test_secrets_come_from_compose_secrets_only(document: dict[str, Any]) -> None:
    declared = document["secrets"]
    assert set(declared) == {*installation.SECRETS, "database_password", "tls_certificate", "tls_key"}
    assert all(entry == {"file": f"./secrets/{name}"} for name, entry in declared.items())
    script = _service(document, compose.Service.INIT)["command"][-1]
    settings = _settings_of(document, compose.Service.INIT)
    for name in installation.SECRETS:
        assert f"/run/secrets/{name}" in script
    assert f"-t {settings.secrets_dir} " in script
    # No value of a secret in the file: no variable that carries one, no URL with a password.
    for name, service in document["services"].items():
        for variable, value in service.get("environment", {}).items():
            assert not re.search(r"PASSWORD$|SECRET|TOKEN|KEY$", variable), (name, variable)
            assert not re.search(r"://[^/@]*:[^/@]*@", value), (name, variable)


def test_init_installs_the_compose_secrets_and_initialises_the_archive(
        document: dict[str, Any], postgres: PostgresServer, tmp_path: Path) -> None:
    """The init service's own command, in a container-like file system (bubblewrap): the image's
    checkout, an empty var volume and the Compose secrets where Compose mounts them."""
    service = _service(document, compose.Service.INIT)
    secrets, var = tmp_path / "secrets", tmp_path / "var"
    secrets.mkdir()
    var.mkdir()
    for name in service["secrets"]:
        (secrets / name).write_text(f"{name} of this site\n")
    # The one difference: the database server's name on the Compose network.
    environment = {**service["environment"], "NORTHANC_DATABASE_URL": postgres.create_database("compose_init"),
                   "PATH": "/usr/bin:/bin", "NORTHANC_PASSWORD_COST": TEST_PASSWORD_COST}
    container = ["bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                 "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc", "/etc", "--dev", "/dev", "--proc", "/proc",
                 "--tmpfs", "/tmp", "--ro-bind", str(ROOT), str(ROOT), "--ro-bind", str(ROOT), str(compose.CHECKOUT),
                 "--bind", str(var), str(compose.VAR), "--ro-bind", str(secrets), "/run/secrets"]
    done = subprocess.run([*container, *service["command"]], env=environment, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "first site admin: admin" in done.stdout and "one-time password: " in done.stdout
    for name in installation.SECRETS:
        installed = var / "secrets" / name
        assert installed.read_text() == f"{name} of this site\n"
        assert installed.stat().st_mode & 0o777 == 0o600
    # libpq's password file: any host, port, database and user, the database_password secret.
    assert (var / "secrets" / "pgpass").read_text() == "*:*:*:*:database_password of this site\n"
    assert (var / "secrets" / "pgpass").stat().st_mode & 0o777 == 0o600
    assert (var / "archive").is_dir()


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    var = tmp_path / "var"
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'archive.sqlite'}", archive_root=var / "archive",
                        log_dir=var / "log", password_cost=TEST_PASSWORD_COST)
    archive = Archive(settings)
    installation.initialise(archive)
    archive.close()
    running = start_portal(settings)
    yield running
    running.stop()


def test_the_proxy_configuration_serves_the_portal_over_tls(portal: Portal, tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    ca = _certificates(folder)
    front = replace(compose.production_front(portal.settings), upstream=f"127.0.0.1:{portal.settings.portal_port}",
                    https_port=free_port(), http_port=free_port(), certificate=str(folder / "server.pem"),
                    key=str(folder / "server.key"), pid_file=str(tmp_path / "nginx.pid"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(compose.nginx_conf(portal.settings, front))
    with (tmp_path / "nginx.log").open("wb") as log:
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-e", "stderr"], stderr=log)
    try:
        context = ssl.create_default_context(cafile=str(ca))

        def login_page() -> tuple[str, str] | None:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{front.https_port}/login", context=context, timeout=5) as answer:
                    return answer.read().decode(), answer.headers["Strict-Transport-Security"]
            except urllib.error.URLError:
                return None

        page, strict_transport = wait_until(login_page, 30, "the proxy to answer")
        assert 'name="password"' in page
        assert strict_transport == "max-age=31536000"
        with pytest.raises(urllib.error.HTTPError) as redirected:
            urllib.request.build_opener(_NoRedirect).open(f"http://127.0.0.1:{front.http_port}/login", timeout=5)
        assert redirected.value.code == 301
        assert redirected.value.headers["Location"] == "https://127.0.0.1/login"
    finally:
        stop_child(nginx)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
