"""Benchmark of OHIF on the portal's DICOMweb beside plain OHIF on Orthanc's DICOMweb behind a bare proxy.

Run from the repository root:  .venv/bin/python -m bench.ohif [--runs N] [--requests N] [--profile]

bench.seg's synthetic MR series (176 sagittal slices of 256x256, single-frame) goes to a test
Northanc over storescu and is converted; an ROI (a ~100k-voxel blob) is saved on its NIfTI with
``roi_actions.upload_mask`` and the SEG publisher, so that Orthanc holds the archive's own SEG of
it. A reader of the project then reads the study two ways, side by side in one run:

- portal: the portal under gunicorn as ``setup.sh run`` serves it: OHIF at ``/ohif/`` on the
  portal's ``/dicom-web/`` (session cookie, roles, QIDO filtered and paged to the caller's studies,
  Orthanc's URLs rebased, JSON gzipped where the client takes it);
- bare: the same OHIF files (the portal's copy rewritten for ``/ohif/``) and the same
  ``app-config.js``, served with a bare reverse proxy at ``/dicom-web/`` by one minimal Flask
  app (``bare_app`` below) on the same stack: gunicorn, as many sync workers, the same HTTP client
  to Orthanc (``OrthancRest.stream``). The proxy checks nothing: it adds Orthanc's credentials and
  passes the browser's ``Host`` on (as nginx's ``proxy_set_header Host``), so that Orthanc's
  DICOMweb names the proxy in RetrieveURL and BulkDataURI; it gzips JSON answers as the portal
  does (same level, same threshold; as nginx's ``gzip on``), so both sides compress or neither.

(1) HTTP, one request at a time on loopback, portal and bare alternating, median of
    ``--requests`` after two warm-ups each: QIDO studies (OHIF's work-list query) and series of
    the study, series metadata of the 176 instances gzipped and not (and the bytes on the wire),
    one frame (WADO-RS); and the portal's metadata for a reader of a pseudonymised project (each
    instance's JSON rewritten), beside the same bare answer: the price of pseudonymisation, shown
    without a target.
(2) OHIF in Debian's Chromium (software WebGL), one context per side, one warm-up then ``--runs``
    runs per side alternating: from navigation to ``/ohif/viewer?StudyInstanceUIDs=...`` to the
    first image (lit pixels in the viewport's canvas, as tests/test_ohif_browser.py checks), then
    the SEG opened as a user opens it (double click on its thumbnail, "Yes", segmentation panel,
    the label listed, a slice the SEG covers shown) until the overlay's colour is on the canvas;
    also, without a target, until the last of the 176 frames was in, and the DICOMweb requests
    OHIF made, by kind, with their median duration in the browser (and any that failed).

Target: every timed row at most 1.1 x bare (the checks cost under 10 %). ``--profile``
profiles the portal's side (in-process Flask test client, cProfile) of each HTTP row that misses,
and of the metadata and frame requests when an OHIF row misses.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import http.client
import io
import json
import logging
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import nibabel as nib
import numpy as np
import pydicom
from flask import Flask, Response, request, send_from_directory
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from werkzeug.exceptions import NotFound as HTTPNotFound

from bench.common import table
from bench.seg import BLOB_VOXELS, SLICES, Queue, blob, write_series
from nifti_archive import accounts
from nifti_archive.models import File, FileKind, Project, Role, Study
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings, load_settings
from nifti_archive.waiting import wait_until
from portal import headers as portal_headers
from portal.api.dicomweb import GZIP_LEVEL, GZIP_MIN_BYTES, PASSED_HEADERS
from portal.app import FRONTEND, create_app
from portal.pages import ohif
from segmentation import roi_actions, rois, seg_export
from testbed.children import stop_child
from testbed.northanc import Northanc, northanc_settings
from testbed.portal import chromium, log_in, start_portal
from testbed.ports import free_port
from tests.test_ohif_browser import NO_TOUR, OHIF_TIMEOUT_MS, SHOW_IMAGE, VIEWPORT_PIXELS

log = logging.getLogger("bench.ohif")
REPOSITORY = Path(__file__).resolve().parents[1]
RATIO_TARGET = 1.1
USER, PASSWORD = "reader", "benchmark password"
LABEL = "lesion"
JSON_TYPES = {"application/dicom+json", "application/json"}
GZIP = {"Accept-Encoding": "gzip"}
# As OHIF's data source asks: the work list, the study's series, a series' metadata, a frame.
WORK_LIST = "/dicom-web/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream"
UID = re.compile(r"\d+(?:\.\d+)+")
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
# A fresh OHIF each run, as each browser test has: no state of the run before (panels, tours).
INIT_SCRIPT = f"try {{ localStorage.clear(); sessionStorage.clear(); {NO_TOUR} }} catch (error) {{}}"  # about:blank has no storage
FIRST_IMAGE = f"() => {{ const p = ({VIEWPORT_PIXELS})(); return p && p.lit > 2000 ? performance.now() : 0; }}"
OVERLAY = (f"(sop) => {{ const p = ({VIEWPORT_PIXELS})();"
           " return p && p.coloured > 1000 && p.imageId.includes(`/instances/${sop}/`) ? performance.now() : 0; }")
POLL_MS = 100


# --- the bare side: OHIF's files and a proxy that checks nothing ------------------------------------------


def bare_app() -> Flask:
    """The baseline's server, for gunicorn (``bench.ohif:bare_app()``, settings from the environment):
    the portal's OHIF files and app-config at ``/ohif/``, and ``/dicom-web/`` proxied to Orthanc's
    DICOMweb with Orthanc's credentials, nothing checked, JSON gzipped as the portal gzips it."""
    settings = load_settings()
    orthanc = orthanc_for(settings)
    dist = ohif._build(FRONTEND / "node_modules" / ohif.DIST, settings.var_dir)
    app = Flask("bench.ohif.bare")

    @app.after_request
    def _policy(response: Response) -> Response:
        if request.path.startswith(ohif.PREFIX):
            response.headers.update(portal_headers.OHIF_HEADERS)
        return response

    @app.route("/dicom-web/<path:_rest>")
    def proxy(_rest: str) -> Response:
        uri = quote(request.path) + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
        answer = orthanc.stream("GET", uri, {"Accept": request.headers.get("Accept", "*/*"), "Host": request.host})
        passed = {name: answer.headers[name] for name in PASSED_HEADERS if answer.headers[name]}
        media = (answer.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media in JSON_TYPES and request.accept_encodings["gzip"]:
            body = answer.read()
            if len(body) < GZIP_MIN_BYTES:
                return Response(body, status=answer.status, headers=passed)
            response = Response(gzip.compress(body, GZIP_LEVEL), status=answer.status, content_type=answer.headers["Content-Type"])
            response.headers["Content-Encoding"] = "gzip"
            response.vary.add("Accept-Encoding")
            return response
        response = Response(answer.chunks(), status=answer.status, headers=passed, direct_passthrough=True)
        response.call_on_close(answer.close)
        return response

    def index() -> Response:
        response = Response(dist.index.format(token=""), mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.route("/ohif/app-config.js")
    def app_config() -> Response:
        response = Response(ohif.config_script(), mimetype="text/javascript")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.route("/ohif/", defaults={"name": ""})
    @app.route("/ohif/<path:name>")
    def asset(name: str) -> Response:
        if name in dist.names:
            return send_from_directory(dist.folder, name, max_age=3600)
        if name and name != "index.html":
            try:
                return send_from_directory(dist.dist, name, max_age=3600)
            except HTTPNotFound:
                if Path(name).suffix.lower() in ohif.ASSET_SUFFIXES:
                    raise
        return index()

    return app


@dataclass
class BareServer:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_child(self.process)


def start_bare(settings: Settings, workers: int) -> BareServer:
    """``bare_app`` under gunicorn with the portal's worker count, timeout and access log."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "600",
               "--access-logfile", str(settings.log_dir / "bare-access.log"), "bench.ohif:bare_app()"]
    process = subprocess.Popen([*command[:-1], "--error-logfile", str(settings.log_dir / "bare.log"), command[-1]],
                               env=child_environment(settings), cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = BareServer(f"http://127.0.0.1:{port}", process)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the bare server exited with {process.returncode}; see {settings.log_dir / 'bare.log'}")
        try:
            return fetch(server.url, "/ohif/app-config.js").status == 200
        except OSError:
            return False

    try:
        wait_until(answers, 60, f"the bare server at {server.url}", interval=0.2)
    except BaseException:
        server.stop()
        raise
    return server


# --- the data ----------------------------------------------------------------------------------------------


@dataclass
class Site:
    project_id: int
    study_uid: str
    series_uid: str
    # An image of the series, and the one the SEG labels most pixels of.
    first_sop: str
    seg_sop: str
    seg_frames: int


def prepare(northanc: Northanc, work: Path) -> Site:
    """The series converted, the archive's SEG of a blob on it stored in Orthanc, a reader on the project."""
    start = time.perf_counter()
    paths, series_uid = write_series(work / "dicom")
    northanc.storescu(paths)
    northanc.wait_for_conversions(1, timeout=300)
    archive = northanc.archive
    with archive.sessions() as session:
        record = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
        assert record is not None, "the synthetic series was not converted"
        reference = rois.reference_image(archive, session, record.id)
        study = session.get_one(Study, record.study_id)
        project, study_uid = study.subject.project, study.study_instance_uid
    shape = reference.shape
    mask = blob(shape, (shape[0] // 2 + 20, shape[1] // 2 - 10, shape[2] // 2 + 8), BLOB_VOXELS, seed=1)
    upload = work / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), reference.affine), upload)
    queue = Queue(northanc)
    queue.prepare()
    saved = roi_actions.upload_mask(archive, project, reference.study.id, reference.file.id, upload, LABEL, "#ff0000", "archive",
                                    seg_export.publisher(archive, northanc.rest))
    assert saved.roi.seg_instance_uid and not saved.seg_message, saved.seg_message
    queue.settle()  # the SEG series' own request (STABLE_SERIES), out of the way of the timing
    seg = pydicom.dcmread(io.BytesIO(northanc.rest.dicom(seg_export.orthanc_instance(northanc.rest, saved.roi.seg_instance_uid))))
    labelled = {
        str(groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID): int(np.count_nonzero(frame))
        for frame, groups in zip(seg.pixel_array.reshape(-1, seg.Rows, seg.Columns), seg.PerFrameFunctionalGroupsSequence, strict=True)
    }
    with archive.unit_of_work() as (session, _journal):
        user, _one_time = accounts.create_user(session, USER)
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, session.get_one(Project, project.id), Role.READER)
    first_sop = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SOPInstanceUID)
    log.info("%d slices sent and converted, SEG of %d voxels on %d frames stored: %.0f s", len(paths), int(mask.sum()),
             len(labelled), time.perf_counter() - start)
    return Site(project.id, study_uid, series_uid, first_sop, max(labelled, key=lambda uid: labelled[uid]), len(labelled))


def set_pseudonymised(northanc: Northanc, project_id: int, value: bool) -> None:
    with northanc.archive.unit_of_work() as (session, _journal):
        session.get_one(Project, project_id).pseudonymise = value


# --- (1) HTTP ----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    encoding: str
    cookie: str


def fetch(base_url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None) -> Answer:
    """One request on a new connection (gunicorn's sync workers close each); the body as it came."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
        return Answer(response.status, response.read(), response.getheader("Content-Encoding") or "", cookie)
    finally:
        connection.close()


def session_cookie(base_url: str) -> str:
    """The portal's session cookie of the reader, through the log-in form. (The cookie is Secure:
    Chromium sends it to 127.0.0.1, Python's cookie jar would not, so it is carried by hand.)"""
    page = fetch(base_url, "/login")
    found = CSRF_INPUT.search(page.body.decode())
    assert found is not None, "no CSRF token on the log-in page"
    form = urlencode({"csrf_token": found.group(1), "username": USER, "password": PASSWORD, "next": ""}).encode()
    answer = fetch(base_url, "/login", {"Cookie": page.cookie, "Content-Type": "application/x-www-form-urlencoded"}, "POST", form)
    assert answer.status == 302 and answer.cookie, f"log-in failed: {answer.status}"
    return answer.cookie


def decoded(answer: Answer) -> Any:
    return json.loads(gzip.decompress(answer.body) if answer.encoding == "gzip" else answer.body)


@dataclass
class Row:
    section: str
    what: str
    portal_ms: float
    bare_ms: float
    judged: bool = True
    portal_bytes: int | None = None
    bare_bytes: int | None = None
    # The portal's request, for --profile.
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.portal_ms / self.bare_ms

    @property
    def met(self) -> bool | None:
        return self.ratio <= RATIO_TARGET if self.judged else None


def compare(portal: str, bare: str, cookie: str, what: str, path: str, headers: dict[str, str], repeat: int,
            check: Callable[[Answer, Answer], None] | None = None, judged: bool = True) -> Row:
    """Median ms of the same request to both sides, alternating, after two warm-ups each."""
    samples: dict[str, list[float]] = {"portal": [], "bare": []}
    answers: dict[str, Answer] = {}
    for number in range(repeat + 2):
        for side, url, extra in (("portal", portal, {"Cookie": cookie}), ("bare", bare, {})):
            start = time.perf_counter()
            answer = fetch(url, path, {**headers, **extra})
            elapsed = (time.perf_counter() - start) * 1000
            assert answer.status == 200, f"{side} answered {answer.status} to {path}: {answer.body[:300]!r}"
            if number >= 2:
                samples[side].append(elapsed)
            answers[side] = answer
    if check is not None:
        check(answers["portal"], answers["bare"])
    row = Row("HTTP", what, statistics.median(samples["portal"]), statistics.median(samples["bare"]), judged,
              len(answers["portal"].body), len(answers["bare"].body), path, headers)
    log.info("  %s: portal %.1f ms, bare %.1f ms", what, row.portal_ms, row.bare_ms)
    return row


def http_rows(northanc: Northanc, site: Site, portal: str, bare: str, repeat: int) -> list[Row]:
    cookie = session_cookie(portal)
    series = f"/dicom-web/studies/{site.study_uid}/series"
    metadata = f"{series}/{site.series_uid}/metadata"
    frame = f"{series}/{site.series_uid}/instances/{site.first_sop}/frames/1"
    bare_host = urlsplit(bare).netloc.encode()

    def same_studies(p: Answer, b: Answer) -> None:
        assert len(decoded(p)) == len(decoded(b)) == 1, "the work list should hold the one study"

    def same_series(p: Answer, b: Answer) -> None:
        assert len(decoded(p)) == len(decoded(b)) == 2, "the study should hold the MR series and the SEG"

    def same_metadata(p: Answer, b: Answer) -> None:
        portal_json, bare_json = decoded(p), decoded(b)
        assert len(portal_json) == len(bare_json) == SLICES, (len(portal_json), len(bare_json))
        raw = gzip.decompress(b.body) if b.encoding == "gzip" else b.body
        # Orthanc named the proxy (the Host passed on), not itself: OHIF's bulk data goes through the proxy.
        assert bare_host in raw and northanc.settings.orthanc_url.encode() not in raw, "Orthanc's URLs leak through the bare proxy"

    def gzipped(p: Answer, b: Answer) -> None:
        same_metadata(p, b)
        assert p.encoding == b.encoding == "gzip", (p.encoding, b.encoding)

    def plain(p: Answer, b: Answer) -> None:
        same_metadata(p, b)
        assert p.encoding == b.encoding == "", (p.encoding, b.encoding)

    accept_json = {"Accept": "application/dicom+json"}
    rows = [
        compare(portal, bare, cookie, "QIDO studies (OHIF's work list), gzip", WORK_LIST, {**accept_json, **GZIP}, repeat, same_studies),
        compare(portal, bare, cookie, "QIDO series of the study, gzip", series, {**accept_json, **GZIP}, repeat, same_series),
        compare(portal, bare, cookie, "series metadata, 176 instances, gzip", metadata, {**accept_json, **GZIP}, repeat, gzipped),
        compare(portal, bare, cookie, "series metadata, 176 instances, not compressed", metadata, accept_json, repeat, plain),
        compare(portal, bare, cookie, "one frame, 256x256x16 bits (WADO-RS frames)", frame, {"Accept": FRAME_ACCEPT}, repeat),
    ]
    set_pseudonymised(northanc, site.project_id, True)
    try:
        rows.append(compare(portal, bare, cookie, "series metadata, gzip, pseudonymised project (bare: not pseudonymised)",
                            metadata, {**accept_json, **GZIP}, repeat, gzipped, judged=False))
    finally:
        set_pseudonymised(northanc, site.project_id, False)
    return rows


# --- (2) OHIF in Chromium ----------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    page: Page
    first_image: list[float] = field(default_factory=list)
    seg_from_click: list[float] = field(default_factory=list)
    seg_from_navigation: list[float] = field(default_factory=list)
    # From navigation until the last of the series' frames was in (ms).
    all_frames: list[float] = field(default_factory=list)
    # Durations (ms, in the browser) of the DICOMweb requests OHIF made, by kind; the failed ones.
    requests: dict[str, list[float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    # When (epoch ms) each frame of the current run was in.
    frame_ends: list[float] = field(default_factory=list)
    counting: bool = False


def request_kind(url: str) -> str:
    path = urlsplit(url).path
    if "/frames/" in path:
        return "WADO-RS frames"
    if path.endswith("/metadata"):
        return "WADO-RS metadata"
    if "/bulk/" in path:
        return "bulk data (the SEG's pixels)"
    if path.endswith(("/studies", "/series", "/instances")):
        return "QIDO-RS"
    return UID.sub("{uid}", path)


def open_side(browser: Browser, name: str, url: str) -> Side:
    context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(OHIF_TIMEOUT_MS)
    page = context.new_page()
    if name == "portal":
        log_in(page, USER, PASSWORD)
    context.add_init_script(INIT_SCRIPT)
    side = Side(name, page)

    def finished(sent: Any) -> None:
        if "/dicom-web/" not in sent.url:
            return
        timing, kind = sent.timing, request_kind(sent.url)
        if kind == "WADO-RS frames":
            side.frame_ends.append(float(timing["startTime"] + timing["responseEnd"]))
        if side.counting:
            side.requests.setdefault(kind, []).append(float(timing["responseEnd"]))

    def answered(response: Any) -> None:
        if "/dicom-web/" in response.url and response.status >= 400:
            side.failed.append(f"{response.status} {request_kind(response.url)}")

    page.on("requestfinished", finished)
    page.on("response", answered)
    return side


def ohif_run(side: Side, site: Site, timed: bool) -> None:
    """From navigation to the first image, then the SEG opened until its overlay is on the canvas."""
    page = side.page
    side.counting = timed
    page.goto("about:blank")
    side.frame_ends = []
    page.goto(f"/ohif/viewer?StudyInstanceUIDs={site.study_uid}", wait_until="commit")
    first = float(page.wait_for_function(FIRST_IMAGE, polling=POLL_MS).json_value())
    origin = float(page.evaluate("() => performance.timeOrigin"))
    clicked = float(page.evaluate("() => performance.now()"))
    page.locator("[data-cy='study-browser-thumbnail-no-image']").filter(has_text="SEG").dblclick()
    page.get_by_role("button", name="Yes").click()
    page.locator("[data-cy='panelSegmentation-btn']").click()
    expect(page.get_by_text(LABEL, exact=True)).to_be_visible()
    assert page.evaluate(SHOW_IMAGE, site.seg_sop), "the SEG's slice is not in the viewport's stack"
    overlay = float(page.wait_for_function(OVERLAY, arg=site.seg_sop, polling=POLL_MS).json_value())
    side.counting = False
    frames = max(side.frame_ends) - origin if len(side.frame_ends) >= SLICES else float("nan")
    log.info("  %s%s: first image %.0f ms, all frames in %.0f ms, SEG overlay %.0f ms after the double click", side.name,
             "" if timed else " (warm-up)", first, frames, overlay - clicked)
    if timed:
        side.all_frames.append(frames)
        side.first_image.append(first)
        side.seg_from_click.append(overlay - clicked)
        side.seg_from_navigation.append(overlay)


def ohif_rows(site: Site, portal: str, bare: str, runs: int) -> tuple[list[Row], dict[str, Side]]:
    with chromium() as browser:
        sides = {name: open_side(browser, name, url) for name, url in (("portal", portal), ("bare", bare))}
        for side in sides.values():
            ohif_run(side, site, timed=False)
        for number in range(runs):
            # Each side first every other run: neither always meets a cooler machine.
            for name in ("portal", "bare") if number % 2 == 0 else ("bare", "portal"):
                ohif_run(sides[name], site, timed=True)
        for side in sides.values():
            side.page.context.close()
    p, b = sides["portal"], sides["bare"]
    med = statistics.median
    rows = [
        Row("OHIF", "first image, from navigation", med(p.first_image), med(b.first_image)),
        Row("OHIF", f"all {SLICES} frames in, from navigation", med(p.all_frames), med(b.all_frames), judged=False),
        Row("OHIF", "SEG overlay, from the double click on the SEG", med(p.seg_from_click), med(b.seg_from_click)),
        Row("OHIF", "SEG overlay, from navigation", med(p.seg_from_navigation), med(b.seg_from_navigation)),
    ]
    return rows, sides


# --- report and profile -----------------------------------------------------------------------------------


def report(rows: list[Row], sides: dict[str, Side], runs: int, repeat: int, workers: int) -> None:
    lines = [["", "measure", "portal ms", "bare ms", "x bare", "target", "met"]]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "MISSED")
        lines.append([row.section, row.what, f"{row.portal_ms:,.1f}", f"{row.bare_ms:,.1f}", f"{row.ratio:.2f}",
                      f"<= {RATIO_TARGET} x" if row.judged else "", met])
    sizes = [["series metadata on the wire", "portal bytes", "bare bytes"]]
    for row in rows:
        if "metadata" in row.what and row.portal_bytes is not None:
            sizes.append([row.what.replace("series metadata, ", ""), f"{row.portal_bytes:,}", f"{row.bare_bytes or 0:,}"])
    kinds = sorted({kind for side in sides.values() for kind in side.requests})
    requests = [["DICOMweb requests OHIF made", "per run (portal / bare)", "portal median ms", "bare median ms", "x bare"]]
    for kind in kinds:
        p, b = sides["portal"].requests.get(kind, []), sides["bare"].requests.get(kind, [])
        ratio = f"{statistics.median(p) / statistics.median(b):.2f}" if p and b and statistics.median(b) > 0 else ""
        requests.append([kind, f"{len(p) / runs:.0f} / {len(b) / runs:.0f}", f"{statistics.median(p):.1f}" if p else "",
                         f"{statistics.median(b):.1f}" if b else "", ratio])
    failed = [f"{side.name}: {', '.join(side.failed)}" for side in sides.values() if side.failed]
    if failed:
        requests.append(["failed DICOMweb requests", "; ".join(failed), "", "", ""])
    judged = [row for row in rows if row.met is not None]
    log.info("\nHTTP: median of %d requests each after 2 warm-ups; OHIF: median of %d runs each after one warm-up; "
             "gunicorn with %d sync workers on both sides\n%s\n%d of %d targets met\n\n%s\n\n%s", repeat, runs, workers, table(lines),
             sum(1 for row in judged if row.met), len(judged), table(sizes), table(requests))


def profile(northanc: Northanc, rows: list[Row], lines: int = 22) -> None:
    """The portal's side of the missed requests, in-process (Flask test client), five requests per profile:
    the portal's and the archive's own functions by cumulative time (Orthanc's answer inside
    ``OrthancRest.stream`` and ``OrthancAnswer.read``/``chunks``; SQL inside the ORM calls)."""
    missed = [row for row in rows if row.section == "HTTP" and row.met is False]
    if any(row.section == "OHIF" and row.met is False for row in rows):
        # What OHIF asks most: the series' metadata once, a frame per slice.
        missed += [row for row in rows if row.section == "HTTP" and row.judged and row not in missed
                   and ("frame" in row.what or ("metadata" in row.what and row.what.endswith(", gzip")))]
    if not missed:
        return
    app = create_app(northanc.settings, northanc.archive)
    client = app.test_client()
    found = CSRF_INPUT.search(client.get("/login").get_data(as_text=True))
    assert found is not None
    answer = client.post("/login", data={"csrf_token": found.group(1), "username": USER, "password": PASSWORD, "next": ""})
    assert answer.status_code == 302, answer.status_code
    for row in missed:
        client.get(row.path, headers=row.headers).close()
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        for _ in range(5):
            response = client.get(row.path, headers=row.headers)
            response.get_data()
            response.close()
        profiler.disable()
        elapsed = (time.perf_counter() - start) * 200
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"/(portal|nifti_archive)/", lines)
        text = out.getvalue()
        log.info("\n--- profile of the portal's side, in-process, 5 requests (%.1f ms each): %s\n%s", elapsed, row.what,
                 text[text.find("ncalls"):].replace(f"{REPOSITORY}/", "").rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed OHIF runs per side (after one warm-up)")
    parser.add_argument("--requests", type=int, default=20, help="timed HTTP requests per row and side (after two warm-ups)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, on each side")
    parser.add_argument("--profile", action="store_true", help="cProfile the portal's side of rows that miss the target")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("segmentation", "nifti_archive", "highdicom", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-ohif-"))
    northanc = Northanc.start(northanc_settings(work / "var"))
    try:
        site = prepare(northanc, work)
        portal = start_portal(northanc.settings, workers=args.workers)
        bare = start_bare(northanc.settings, args.workers)
        try:
            rows = http_rows(northanc, site, portal.url, bare.url, args.requests)
            browser_rows, sides = ohif_rows(site, portal.url, bare.url, args.runs)
            rows += browser_rows
        finally:
            bare.stop()
            portal.stop()
        report(rows, sides, args.runs, args.requests, args.workers)
        if args.profile:
            profile(northanc, rows)
    finally:
        northanc.stop()
        shutil.rmtree(work, ignore_errors=True)
    log.info("\nwhole run: %.0f s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
