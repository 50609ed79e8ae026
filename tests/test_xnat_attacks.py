"""The XNAT surface and the BIDS zip as attackers meet them, against the portal under gunicorn: a
viewer of ``plain`` with no role on ``hidden``, a stranger without credentials, and a job's token
scoped to ``plain``. Every refusal is a JSON answer that gives nothing away, and nothing is written."""

from __future__ import annotations

import io
import random
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import delete, or_, select

from nifti_archive import accounts
from nifti_archive.catalog.registration import register_file
from nifti_archive.models import ApiToken, File, LoginThrottle, Project, Role, Study, Subject
from portal.xnat import unpack
from portal.xnat.ids import Level, accession
from tests.portal_site import PASSWORD
from tests.test_dicomweb import SECRETS
from tests.test_xnat_client import Site, call, scan_path, serve_site
from tests.test_xnat_client import pytestmark as pytestmark  # the same SEG drawn in set-up, the same warning filtered

HIDDEN_FILE = "1_secret/OTHER/notes.txt"
ATTACK_NAMES = ("escaped", "slipped", "linked")


@dataclass
class Target:
    site: Site
    job_token: str
    # API tokens for /api/v1, which takes no basic credentials.
    tokens: dict[str, str]
    hidden_subject: str
    hidden_scan: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The XNAT test site, with a file in ``hidden``, an editor of ``pseudo`` and a job's token for ``plain``."""
    served = serve_site(tmp_path_factory.mktemp("attacks"))
    site = next(served)
    archive = site.northanc.archive
    try:
        with archive.unit_of_work() as (session, _journal):
            hidden = session.scalars(select(Project).where(Project.name == "hidden")).one()
            study = session.scalars(select(Study).join(Subject).where(Subject.project_id == hidden.id)).one()
            real = archive.layout.study_dir("hidden", study.subject.patient_id, study.study_id) / HIDDEN_FILE
            real.parent.mkdir(parents=True)
            real.write_text("project B's notes")
            register_file(session, study, HIDDEN_FILE, real)
            hidden_subject = accession(Level.SUBJECT, study.subject_id)
            editor, _one_time = accounts.create_user(session, "editor_p")
            accounts.set_password(editor, PASSWORD)
            accounts.grant_role(session, editor, session.scalars(select(Project).where(Project.name == "pseudo")).one(), Role.EDITOR)
            plain = session.scalars(select(Project).where(Project.name == "plain")).one()
            # A run's token, as the runner issues one: the launching user's, limited to the project.
            job = accounts.create_token(session, accounts.get_user(session, "editor_a"), "run", 1)
            job.token.project_id = plain.id
            session.flush()
            tokens = {name: accounts.create_token(session, accounts.get_user(session, name), "api").secret
                      for name in ("viewer_a", "editor_a", "editor_p")}
        yield Target(site, job.secret, tokens, hidden_subject, f"/data/experiments/{site.hidden_experiment}/scans/1_secret")
    finally:
        served.close()


def refused(answer: requests.Response, status: int) -> dict[str, object]:
    """The answer is a refusal with ``status``, as JSON, with no page and no stack trace in it."""
    assert answer.status_code == status, (answer.request.method, answer.url, answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("application/json"), (answer.url, answer.headers["Content-Type"])
    for leak in ("<html", "<!doctype", "Traceback", 'File "/'):
        assert leak.lower() not in answer.text.lower(), (answer.url, answer.text[:300])
    body: dict[str, object] = answer.json()
    return body


def nothing_written(target: Target) -> None:
    """No file an attack named (``escaped``, ``slipped``, ``linked``) is indexed or on disk anywhere."""
    with target.site.northanc.archive.sessions() as session:
        indexed = session.scalars(select(File.path).where(or_(*(File.path.contains(n) for n in ATTACK_NAMES)))).all()
    assert indexed == [], "an attack indexed a file"
    root = target.site.northanc.archive.settings.archive_root
    assert not [p for p in root.parent.rglob("*") if p.name.startswith(ATTACK_NAMES)]


def as_token(token: str, path: str, method: str = "GET", **options: object) -> requests.Response:
    return requests.request(method, path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **options)  # type: ignore[arg-type]


def basic(target: Target, user: str, password: str, path: str, method: str = "GET", **options: object) -> requests.Response:
    return requests.request(method, target.site.portal.url + path, auth=(user, password), timeout=60, **options)  # type: ignore[arg-type]


# ---- project B, by every address ----------------------------------------------------------------

def test_project_b_is_not_found_by_id_label_or_any_path_and_looks_like_nothing(target: Target) -> None:
    experiment, subject = target.site.hidden_experiment, target.hidden_subject
    addresses = [
        "/data/projects/hidden", "/data/projects/hidden/subjects", f"/data/projects/hidden/subjects/{subject}",
        "/data/projects/hidden/subjects/H01", f"/data/subjects/{subject}", f"/data/archive/subjects/{subject}",
        f"/data/experiments/{experiment}", f"/data/archive/experiments/{experiment}", "/data/projects/hidden/experiments/H01_S1",
        f"/data/projects/plain/experiments/{experiment}", f"/data/projects/plain/subjects/{subject}",
        f"/data/projects/plain/subjects/{subject}/experiments/{experiment}", "/data/projects/hidden/subjects/H01/experiments/H01_S1",
        f"{target.hidden_scan}/resources", f"{target.hidden_scan}/files?format=zip",
        f"{target.hidden_scan}/resources/OTHER/files/notes.txt", f"/data/archive{target.hidden_scan[5:]}/resources/OTHER/files/notes.txt",
        "/data/experiments?project=hidden",
    ]
    for path in addresses:
        answer = refused(call(target.site, "viewer_a", path), 404)
        assert "H01" not in answer["error"] and "notes" not in answer["error"], path  # type: ignore[operator]
    # A project without a role answers as one that does not exist, so names cannot be probed.
    for real, invented in (("/data/projects/hidden", "/data/projects/nosuch"),
                           (f"/data/experiments/{experiment}", f"/data/experiments/{accession(Level.EXPERIMENT, 99999)}"),
                           (f"/data/subjects/{subject}", f"/data/subjects/{accession(Level.SUBJECT, 99999)}"),
                           ("/data/experiments?project=hidden", "/data/experiments?project=nosuch")):
        assert call(target.site, "viewer_a", real).json() == call(target.site, "viewer_a", invented).json(), real
    refused(call(target.site, "editor_a", f"{target.hidden_scan}/resources/OTHER/files/more.txt", "PUT", data=b"x"), 404)
    tagging = f"/data/projects/hidden/subjects/{subject}?xnat:subjectData/fields/field[name=x]/field=true"
    refused(call(target.site, "editor_a", tagging, "PUT"), 404)
    nothing_written(target)


def test_a_stranger_gets_401_everywhere_but_the_version(target: Target) -> None:
    for path in ("/data/projects", "/data/projects/plain", f"/data/experiments/{target.site.hidden_experiment}", "/data/JSESSION",
                 "/data/services/tokens/issue", "/xapi/access/projects", "/data/auth", "/api/v1/projects/plain/bids.zip"):
        refused(requests.get(target.site.portal.url + path, timeout=60), 401)
    refused(requests.put(target.site.portal.url + f"{scan_path(target.site)}/resources/QC/files/x.txt", data=b"x", timeout=60), 401)
    assert requests.get(target.site.portal.url + "/data/version", timeout=60).text == "1.8.0"
    for garbled in ("Basic !!!", "Basic " + "A" * 5000, "Negotiate abc", "Basic", "Bearer nrt_made_up"):
        refused(requests.get(target.site.portal.url + "/data/projects", headers={"Authorization": garbled}, timeout=60), 401)
    # XNAT clients' first call, the site root with their credentials, is refused as the API refuses.
    probe = requests.get(target.site.portal.url + "/", auth=("viewer_a", "not the password"), headers={"Accept": "*/*"}, timeout=60)
    refused(probe, 401)
    nothing_written(target)


def test_unknown_users_and_wrong_passwords_get_the_same_answer(target: Target) -> None:
    unknown = refused(basic(target, "nobody_here", "whatever12345", "/data/projects"), 401)
    wrong = refused(basic(target, "viewer_a", "whatever12345", "/data/projects"), 401)
    assert unknown == wrong
    form = requests.put(target.site.portal.url + "/data/services/auth", data={"username": "nobody_here", "password": "x"}, timeout=60)
    assert refused(form, 401) == refused(requests.put(target.site.portal.url + "/data/services/auth",
                                                      data={"username": "viewer_a", "password": "x"}, timeout=60), 401)


# ---- a job's token --------------------------------------------------------------------------------

def test_a_jobs_token_stays_in_its_project_and_mints_nothing(target: Target) -> None:
    url = target.site.portal.url
    assert [row["ID"] for row in as_token(target.job_token, url + "/data/projects").json()["ResultSet"]["Result"]] == ["plain"]
    for path in ("/data/projects/pseudo", "/data/projects/hidden", f"/data/experiments/{target.site.hidden_experiment}"):
        refused(as_token(target.job_token, url + path), 404)
    refused(as_token(target.job_token, url + "/data/services/tokens/issue"), 403)
    as_basic = basic(target, "editor_a", target.job_token, "/data/services/tokens/issue")
    refused(as_basic, 403)
    # A session opened with the job's token is the token's: scoped like it, and no more able to mint tokens.
    opened = requests.put(url + "/data/services/auth", data={"username": "editor_a", "password": target.job_token}, timeout=60)
    cookie = {"JSESSIONID": opened.text}
    assert [r["ID"] for r in requests.get(url + "/data/projects", cookies=cookie, timeout=60).json()["ResultSet"]["Result"]] == ["plain"]
    refused(requests.get(url + "/data/services/tokens/issue", cookies=cookie, timeout=60), 403)
    refused(requests.get(url + "/data/projects/pseudo", cookies=cookie, timeout=60), 404)
    # Another user's name with the job's token proves nothing.
    refused(basic(target, "viewer_b", target.job_token, "/data/projects"), 401)


# ---- alias tokens and sessions --------------------------------------------------------------------

def test_an_alias_token_mints_no_further_tokens_and_ends_with_its_lifetime(target: Target) -> None:
    url = target.site.portal.url
    issued = call(target.site, "viewer_a", "/data/services/tokens/issue").json()
    alias, secret = issued["alias"], issued["secret"]
    refused(basic(target, alias, secret, "/data/services/tokens/issue"), 403)
    opened = requests.put(url + "/data/services/auth", data={"username": alias, "password": secret}, timeout=60)
    cookie = {"JSESSIONID": opened.text}
    refused(requests.get(url + "/data/services/tokens/issue", cookies=cookie, timeout=60), 403)
    refused(basic(target, "viewer_b", secret, "/data/projects"), 401)
    with target.site.northanc.archive.unit_of_work() as (session, _journal):
        token = session.scalars(select(ApiToken).where(ApiToken.name.endswith(alias))).one()
        token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    refused(basic(target, alias, secret, "/data/projects"), 401)
    refused(requests.get(url + "/data/projects", cookies=cookie, timeout=60), 401)


def test_a_session_id_is_the_servers_and_dies_with_a_reset_password_or_a_disabled_user(target: Target) -> None:
    url = target.site.portal.url
    chosen = {"JSESSIONID": "attacker-chosen-session-id"}
    given = requests.get(url + "/data/JSESSION", auth=("viewer_a", PASSWORD), cookies=chosen, timeout=60)
    assert given.status_code == 200 and given.text != chosen["JSESSIONID"]
    refused(requests.get(url + "/data/projects", cookies=chosen, timeout=60), 401)
    cookie_header = given.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
    with_cookie = {"JSESSIONID": given.text}
    assert requests.get(url + "/data/projects", cookies=with_cookie, timeout=60).status_code == 200
    archive = target.site.northanc.archive
    try:
        with archive.unit_of_work() as (session, _journal):
            accounts.set_disabled(session, "viewer_a", True)
        refused(requests.get(url + "/data/projects", cookies=with_cookie, timeout=60), 401)
        refused(call(target.site, "viewer_a", "/data/projects"), 401)
    finally:
        with archive.unit_of_work() as (session, _journal):
            accounts.set_disabled(session, "viewer_a", False)
    again = {"JSESSIONID": requests.get(url + "/data/JSESSION", auth=("viewer_a", PASSWORD), timeout=60).text}
    with archive.unit_of_work() as (session, _journal):
        one_time = accounts.reset_password(session, "viewer_a")
    try:
        refused(requests.get(url + "/data/projects", cookies=again, timeout=60), 401)
        refused(call(target.site, "viewer_a", "/data/projects"), 401)
        # A one-time password is for choosing a new one on the portal's page, not for working with.
        assert basic(target, "viewer_a", one_time, "/data/projects").status_code in (401, 403)
    finally:
        with archive.unit_of_work() as (session, _journal):
            accounts.set_password(accounts.get_user(session, "viewer_a"), PASSWORD)


def test_basic_auth_is_throttled_like_the_log_in_page(target: Target) -> None:
    archive = target.site.northanc.archive
    with archive.unit_of_work() as (session, _journal):
        user, _one_time = accounts.create_user(session, "guessed")
        accounts.set_password(user, PASSWORD)
    try:
        guesses = [basic(target, "guessed", f"guess number {attempt}", "/data/projects").status_code for attempt in range(7)]
        assert guesses[:5] == [401] * 5 and guesses[-1] == 429, guesses
        blocked = basic(target, "guessed", PASSWORD, "/data/projects")
        assert refused(blocked, 429) and int(blocked.headers["Retry-After"]) >= 1
        form = requests.put(target.site.portal.url + "/data/services/auth", data={"username": "guessed", "password": PASSWORD}, timeout=60)
        refused(form, 429)
    finally:
        with archive.unit_of_work() as (session, _journal):
            session.execute(delete(LoginThrottle))


# ---- the portal's own session cookie and other sites ----------------------------------------------

def portal_login(target: Target, user: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(target.site.portal.url + "/login", headers={"Accept": "text/html"}, timeout=60).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    logged = browser.post(target.site.portal.url + "/login", data={"username": user, "password": PASSWORD, "csrf_token": token.group(1)},
                          allow_redirects=False, timeout=60)
    assert logged.status_code == 302
    return browser


def test_the_portals_browser_session_writes_nothing_through_data(target: Target) -> None:
    browser = portal_login(target, "editor_a")
    url = target.site.portal.url
    assert browser.get(url + "/api/v1/projects", timeout=60).status_code == 200, "the browser's session is live"
    cross_site = {"Origin": "https://evil.example", "Referer": "https://evil.example/page"}
    base = scan_path(target.site)
    for method, path in (("PUT", f"{base}/resources/QC/files/csrf.txt"), ("PUT", f"{base}/resources/CSRF"),
                         ("PUT", f"/data/experiments/{base.split('/')[3]}?xnat:mrSessionData/fields/field[name=csrf]/field=true"),
                         ("GET", "/data/services/tokens/issue"), ("GET", "/data/JSESSION")):
        answer = browser.request(method, url + path, data=b"x", headers=cross_site, timeout=60)
        refused(answer, 401)
        assert "Access-Control-Allow-Origin" not in answer.headers
    # Forms cannot PUT: a cross-site POST to the same addresses is no write either.
    refused(browser.post(url + f"{base}/resources/QC/files/csrf.txt", data={"a": "b"}, headers=cross_site, timeout=60), 405)
    preflight = requests.options(url + f"{base}/resources/QC/files/csrf.txt", timeout=60,
                                 headers={**cross_site, "Access-Control-Request-Method": "PUT"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    nothing_written(target)


# ---- names, archives and resources in uploads -----------------------------------------------------

def test_traversing_names_neither_read_nor_write(target: Target) -> None:
    base = scan_path(target.site)
    reads = ["..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "%2Fetc%2Fpasswd",
             "..%5C..%5Cetc%5Cpasswd", "a%00b", "x" * 3000, "../../../../../hidden/H01/S1/1_secret/OTHER/notes.txt"]
    for name in reads:
        for resource in ("NIFTI", "OTHER", "QC", "ROI", "DICOM"):
            answer = call(target.site, "viewer_a", f"{base}/resources/{resource}/files/{name}")
            assert answer.status_code in (400, 404), (resource, name[:40], answer.status_code)
            refused(answer, answer.status_code)
    for name in ("..%2F..%2Fescaped.txt", "%2e%2e/%2e%2e/escaped.txt", "escaped%00.txt",
                 "a/%2e%2e/%2e%2e/%2e%2e/escaped.txt", "escaped" + "x" * 300 + ".txt", "/".join(["d"] * 600) + "/escaped.txt"):
        refused(call(target.site, "editor_a", f"{base}/resources/QC/files/{name}", "PUT", data=b"x"), 400)
    # An absolute name is one below the resource: the router drops the leading slashes.
    for name in ("%2Ftmp%2Finside.txt", "/tmp/inside.txt"):
        assert call(target.site, "editor_a", f"{base}/resources/QC/files/{name}", "PUT", data=b"x").status_code in (201, 409)
    with target.site.northanc.archive.sessions() as session:
        placed = session.scalars(select(File.path).where(File.path.endswith("inside.txt"))).all()
    assert placed == [f"{base.rsplit('/', 1)[1]}/QC/tmp/inside.txt"]
    assert not Path("/tmp/inside.txt").exists()
    for resource in ("..", "%2e%2e", ".hidden", "a%2Fb", "x" * 80):
        answer = call(target.site, "editor_a", f"{base}/resources/{resource}/files/escaped.txt", "PUT", data=b"x")
        assert answer.status_code in (400, 404), resource
        refused(answer, answer.status_code)
    nothing_written(target)


def tar_of(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return bundle.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return bundle.getvalue()


def test_archives_that_slip_link_or_explode_are_refused_before_anything_is_written(target: Target) -> None:
    put = f"{scan_path(target.site)}/resources/BUNDLE/files/up.tgz?extract=true"
    bundles = {
        "tar slip": tar_of(tar_member("ok.txt", size=1), tar_member("../../../slipped.txt", size=1), data=b"x"),
        "absolute tar": tar_of(tar_member("/tmp/slipped.txt", size=1), data=b"x"),
        "symlink": tar_of(tar_member("linked", tarfile.SYMTYPE, "/etc/passwd")),
        "hardlink": tar_of(tar_member("linked", tarfile.LNKTYPE, "/etc/passwd")),
        "device": tar_of(tar_member("linked", tarfile.CHRTYPE)),
        "absolute zip": zip_of({"/tmp/slipped.txt": b"x"}),
        "dotted zip": zip_of({"a/./b/../../../slipped.txt": b"x"}),
        "bomb": zip_of({"slipped.bin": bytes(8 << 20)}),
        "many": zip_of({f"slipped/{n}.txt": b"" for n in range(unpack.MAX_MEMBERS + 1)}, zipfile.ZIP_STORED),
        "not an archive": b"<html>hello</html>",
    }
    for case, data in bundles.items():
        answer = call(target.site, "editor_a", put, "PUT", data=data)
        assert answer.status_code in (400, 413), (case, answer.status_code, answer.text[:200])
        refused(answer, answer.status_code)
    nothing_written(target)
    spool = target.site.northanc.archive.settings.var_dir / "uploads"
    assert not list(spool.iterdir()), "scratch space is cleared after a refusal"


def test_damaged_archives_are_a_400_naming_the_damage_and_write_nothing(target: Target) -> None:
    put = f"{scan_path(target.site)}/resources/BUNDLE/files/up.zip?extract=true"
    crc = zip_of({"slipped_first.txt": b"fine", "slipped_bad.txt": b"payload " * 100}, zipfile.ZIP_STORED)
    bad_crc = crc.replace(b"payload payload", b"pAyload payload", 1)
    whole_tar = tar_of(tar_member("slipped.bin", size=200_000), data=random.randbytes(200_000))
    bundles = {
        "bad CRC": (bad_crc, "member slipped_bad.txt: damaged or inconsistent archive"),
        "truncated zip": (crc[: len(crc) // 2], "damaged or truncated zip archive"),
        "truncated tar": (whole_tar[: len(whole_tar) // 2], "damaged"),
    }
    for case, (data, message) in bundles.items():
        answer = call(target.site, "editor_a", put, "PUT", data=data)
        error = str(refused(answer, 400)["error"])
        assert message in error and "nothing was imported" in error, (case, error)
    nothing_written(target)
    spool = target.site.northanc.archive.settings.var_dir / "uploads"
    assert not list(spool.iterdir()), "scratch space is cleared after a refusal"


def test_dicom_roi_and_seg_are_read_only_and_nifti_is_never_overwritten(target: Target) -> None:
    base = scan_path(target.site)
    for resource in ("DICOM", "ROI", "SEG"):
        refused(call(target.site, "editor_a", f"{base}/resources/{resource}/files/x.dcm", "PUT", data=b"x"), 400)
        refused(call(target.site, "editor_a", f"{base}/resources/{resource}/files/b.zip?extract=true", "PUT",
                     data=zip_of({"x.dcm": b"x"})), 400)
        refused(call(target.site, "editor_a", f"{base}/resources/{resource}", "PUT"), 400)
    listed = call(target.site, "viewer_a", f"{base}/resources/NIFTI/files").json()["ResultSet"]["Result"]
    for row in listed:
        path = row["URI"].split("/files/", 1)[1]
        before = call(target.site, "viewer_a", row["URI"]).content
        refused(call(target.site, "editor_a", f"{base}/resources/NIFTI/files/{path}", "PUT", data=b"replaced"), 409)
        bundle = zip_of({path: b"replaced"})
        refused(call(target.site, "editor_a", f"{base}/resources/NIFTI/files/b.zip?extract=true", "PUT", data=bundle), 409)
        assert call(target.site, "viewer_a", row["URI"]).content == before
    nothing_written(target)


def test_uploaded_pages_and_pictures_come_back_as_sandboxed_downloads(target: Target) -> None:
    qc = f"{scan_path(target.site)}/resources/QC/files"
    scripted = {"page.html": b"<html><script>alert(document.cookie)</script></html>",
                "picture.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                "page.xhtml": b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
                "disguised.png": b"<html><script>alert(1)</script></html>"}
    for name, data in scripted.items():
        assert call(target.site, "editor_a", f"{qc}/{name}", "PUT", data=data).status_code == 201, name
        served = call(target.site, "viewer_a", f"{qc}/{name}")
        assert served.status_code == 200 and served.content == data
        kind = served.headers["Content-Type"]
        assert "html" not in kind and "svg" not in kind and "xml" not in kind, (name, kind)
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in served.headers["Content-Security-Policy"]
        if not name.endswith(".png"):
            assert served.headers["Content-Disposition"].startswith("attachment"), name
    with target.site.northanc.archive.sessions() as session:
        record = session.scalars(select(File).where(File.path.endswith("QC/page.html"))).one()
    through_api = as_token(target.tokens["viewer_a"], f"{target.site.portal.url}/api/v1/files/{record.id}/content")
    assert through_api.headers["Content-Type"] == call(target.site, "viewer_a", f"{qc}/page.html").headers["Content-Type"]
    zipped = call(target.site, "viewer_a", f"{qc}?format=zip")
    assert zipped.headers["Content-Type"] == "application/zip" and zipped.headers["Content-Disposition"].startswith("attachment")
    assert zipped.headers["X-Content-Type-Options"] == "nosniff"


# ---- a pseudonymised project ----------------------------------------------------------------------

def test_nothing_served_from_a_pseudonymised_project_names_the_patient(target: Target) -> None:
    site = target.site
    scan = scan_path(site, "pseudo")
    experiment = scan.split("/")[3]
    texts = [call(site, "viewer_b", path).content for path in (
        "/data/projects/pseudo/subjects", "/data/projects/pseudo/experiments", f"/data/experiments/{experiment}",
        f"{scan}", f"{scan}/resources", f"{scan}/files", "/data/experiments?project=pseudo", f"{scan}/files?format=zip",
        f"/data/experiments/{experiment}/scans/ALL/files?format=zip")]
    for row in call(site, "viewer_b", f"{scan}/files").json()["ResultSet"]["Result"]:
        texts.append(row["URI"].encode())
        texts.append(call(site, "viewer_b", row["URI"]).content)
    bids = as_token(target.tokens["editor_p"], site.portal.url + "/api/v1/projects/pseudo/bids.zip")
    assert bids.status_code == 200
    with zipfile.ZipFile(io.BytesIO(bids.content)) as bundle:
        texts += [name.encode() for name in bundle.namelist()] + [bundle.read(name) for name in bundle.namelist()]
    everything = b"\n".join(texts)
    assert site.pseudonym.encode() in everything
    # The real patient id names no subject: a label probe finds nothing it would not find for any name.
    real_id, invented = (f"/data/projects/pseudo/subjects/{label}" for label in (SECRETS["PatientID"], "NOT-A-PATIENT"))
    assert refused(call(site, "viewer_b", real_id), 404) == refused(call(site, "viewer_b", invented), 404)
    for secret in SECRETS.values():
        assert secret.encode() not in everything, secret


# ---- the BIDS zip ---------------------------------------------------------------------------------

def test_the_bids_zip_is_for_editors_only_and_a_bad_filter_is_a_400(target: Target) -> None:
    url = target.site.portal.url + "/api/v1/projects/{}/bids.zip"
    viewer, editor = target.tokens["viewer_a"], target.tokens["editor_a"]
    refused(as_token(viewer, url.format("plain")), 403)
    assert as_token(viewer, url.format("hidden")).json() == as_token(viewer, url.format("nosuch")).json()
    refused(as_token(viewer, url.format("hidden")), 404)
    refused(as_token(target.job_token, url.format("pseudo")), 404)
    for bad in ("STAG:x & & y", "JOB:z", "&", "x &", "PTAG:"):
        refused(as_token(editor, url.format("plain"), params={"filter": bad}), 400)
