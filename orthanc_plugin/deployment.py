"""Orthanc for Northanc: its configuration, its environment and its process.

Used by the run command, the tests and the benchmarks alike, so that all three run the
same Orthanc set-up: Debian's Orthanc with the Python and DICOMweb plugins, HTTP on
localhost with authentication, the DICOM port for modalities and PACS, and our plugin.
This module does not import Orthanc's ``orthanc`` module; plugin.py does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from nifti_archive.orthanc_api import OrthancRest, OrthancUnavailable
from nifti_archive.permissions import PRIVATE_DIR, PRIVATE_FILE, PROCESS_UMASK
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until

log = logging.getLogger(__name__)

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
ENTRY_SCRIPT = Path(__file__).with_name("orthanc_entry.py")
# DCMTK waits for delayed ACKs unless told otherwise: ~10 instances/s over C-STORE without
# these, 100-250/s with them, on both ends of every association.
DICOM_TCP_ENVIRONMENT = {"TCP_NODELAY": "1", "TCP_BUFFER_LENGTH": "131072"}
# Connections of Orthanc's PostgreSQL index: with one, every REST read and every stored instance
# queue for it; as many as Orthanc's DICOM threads let those threads store side by side.
POSTGRESQL_INDEX_CONNECTIONS = 4


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


DEPLOYMENT_VAR = Path("/var/lib/northanc")
PASSWORD_PLACEHOLDER = "<written by nora --admin init to <var>/secrets/orthanc_password>"


def deployment_config() -> dict[str, object]:
    """The configuration of a deployment with var at /var/lib/northanc, as committed in orthanc.json."""
    settings = Settings(
        var_dir=DEPLOYMENT_VAR,
        database_url=f"sqlite:///{DEPLOYMENT_VAR / 'archive.sqlite'}",
        archive_root=DEPLOYMENT_VAR / "archive",
        log_dir=DEPLOYMENT_VAR / "log",
        orthanc_password=PASSWORD_PLACEHOLDER,
    )
    config = orthanc_config(settings)
    config["Northanc"] = {"SitePackages": "<the site-packages of Northanc's .venv>", "Var": str(DEPLOYMENT_VAR)}
    config["PythonScript"] = "<checkout>/orthanc_plugin/orthanc_entry.py"
    return config


def orthanc_config(settings: Settings, with_plugin: bool = True) -> dict[str, object]:
    root = settings.var_dir / "orthanc"
    username, password = settings.orthanc_credentials()
    plugins = [str(PLUGIN_DIR / "libOrthancDicomWeb.so")]
    config: dict[str, object] = {
        "Name": "Northanc",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": settings.orthanc_http_port,
        "DicomPort": settings.orthanc_dicom_port,
        "DicomAet": settings.orthanc_aet,
        # Projects may publish their own AET (routing by called AET): accept any.
        "DicomCheckCalledAet": False,
        # A calling AET counts only from the host its modality was registered with (an IP
        # address), and a modality gets only the services it is allowed (dicom_nodes.py).
        "DicomCheckModalityHost": True,
        # Query and retrieve only for peers a site admin allowed, never for anyone else.
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowMove": False,
        "DicomAlwaysAllowGet": False,
        # Either of these lets any caller associate; off, only registered senders and peers
        # may C-STORE or C-ECHO (Orthanc reads them at start: a change needs a restart).
        "DicomAlwaysAllowStore": settings.accept_unregistered_senders,
        "DicomAlwaysAllowEcho": settings.accept_unregistered_senders,
        "DicomThreadsCount": 4,
        "RemoteAccessAllowed": settings.orthanc_remote_access,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "StableAge": settings.stable_age,
        # Never delete originals to make room: an archive keeps them.
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "Northanc": {"SitePackages": site_packages(), "Var": str(settings.var_dir)},
    }
    if settings.orthanc_database_url:
        # Orthanc's index (not its files) in PostgreSQL; Lock: one Orthanc per database.
        plugins.append(str(PLUGIN_DIR / "libOrthancPostgreSQLIndex.so"))
        config["PostgreSQL"] = {
            "EnableIndex": True,
            "EnableStorage": False,
            "ConnectionUri": settings.orthanc_database_url,
            "Lock": True,
            "IndexConnectionsCount": POSTGRESQL_INDEX_CONNECTIONS,
        }
    if with_plugin:
        plugins.insert(0, str(PLUGIN_DIR / "libOrthancPython.so"))
        config["PythonScript"] = str(ENTRY_SCRIPT)
        config["PythonVerbose"] = False
    config["Plugins"] = plugins
    return config


def orthanc_environment(settings: Settings) -> dict[str, str]:
    """Orthanc's environment: the DICOM speed settings and the settings the plugin reads."""
    return child_environment(settings, DICOM_TCP_ENVIRONMENT)


# The plugin's route that answers once it has started (orthanc_plugin.plugin.Plugin.answer_ready).
READY_ROUTE = "/northanc/ready"


@dataclass
class OrthancProcess:
    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path
    with_plugin: bool = True

    def api(self) -> OrthancRest:
        return OrthancRest(self.settings.orthanc_url, *self.settings.orthanc_credentials())

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until Orthanc answers and asks for credentials, as it must, and our plugin has started."""
        wait_until(self._answers, timeout, f"Orthanc to answer at {self.settings.orthanc_url}; see {self.log_path}")
        if self.with_plugin:
            wait_until(self._plugin_started, timeout, f"the Northanc plugin to start; see {self.log_path}")

    def _plugin_started(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.log_path}")
        try:
            self.api().get(READY_ROUTE)
        except OrthancUnavailable:
            return False
        return True

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.log_path}")
        try:
            urllib.request.urlopen(self.settings.orthanc_url + "/system", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == HTTPStatus.UNAUTHORIZED
        except OSError:
            return False
        raise RuntimeError(f"Orthanc at {self.settings.orthanc_url} answers without credentials; see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_orthanc(
    settings: Settings, with_plugin: bool = True, detach: bool = False, extra: Mapping[str, object] | None = None
) -> OrthancProcess:
    """Orthanc on these settings; ``extra`` adds configuration (a PACS peer's own modalities, say)."""
    root = settings.var_dir / "orthanc"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(PRIVATE_DIR)  # the originals, readable by the archive alone
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps({**orthanc_config(settings, with_plugin), **(extra or {})}, indent=2))
    config_path.chmod(0o600)  # it holds the REST password
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / "orthanc.log"
    # Orthanc's log names patients and series: the archive's own account reads it, nobody else.
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE), "ab") as log_file:
        process = subprocess.Popen(
            [ORTHANC, "--no-jobs", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=orthanc_environment(settings),
            start_new_session=detach,
            umask=PROCESS_UMASK,
        )
    return OrthancProcess(settings, process, log_path, with_plugin)
