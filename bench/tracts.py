"""Benchmark of the fibre viewer: a 100,000-streamline TCK over a 256x256x176 volume in Debian's
Chromium without a GPU, opened in the viewer and selected by a sphere, beside NiiVue loading the
same file on a bare page in the same run.

Run from the repository root:  .venv/bin/python -m bench.tracts [--runs N] [--streamlines N]

The archive, the volume and the account are bench/portal's (``prepare``); the tractogram is
synthetic (testbed/tractograms.py: smooth random curves, 20 to 60 points 2 mm apart, in a brain's
ellipsoid), registered in the volume's study. Each run is a fresh browser context:

- the viewer: the study opened (the volume drawn), then the TCK double-clicked in the file list, as
  a user opens it; "first draw" runs from the double-click (its event in the page) to the tract drawn and read back (the
  end of the fibre tool's ``fibre tract drawn`` measure, a pixel read back once NiiVue has drawn it);
- the bare page: NiiVue (the portal's copy, the same code the viewer runs) on a page of its own with
  a canvas of the viewer's size, the volume loaded, then the TCK fetched, added and drawn;
- selections: spheres of 10 mm at points near the middle, each from all streamlines kept, timed
  by the page's measures: ``fibre select`` (which streamlines pass) and ``fibre show`` (the kept
  ones drawn again and read back, software WebGL).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, Page, Route
from sqlalchemy import select

from bench.common import table
from bench.portal import PASSWORD, VOLUME_SHAPE, prepare
from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import add_files
from nifti_archive.models import File, Project
from testbed.portal import chromium, log_in, start_portal
from testbed.tractograms import curves, write_tck

log = logging.getLogger("bench.tracts")
BARE_PATH = "/bench-bare-tracts"
SELECTIONS = 8
SPHERE_MM = 10.0
TARGET_RATIO = 1.2
TARGET_SELECTION_MS = 200.0
NIIVUE_OPTIONS = ("{backColor: [0, 0, 0, 1], crosshairColor: [1, 0.2, 0.2, 1], show3Dcrosshair: true, dragAndDropEnabled: false, "
                  "isResizeCanvas: true, logLevel: 'error'}")
# The bare page: NiiVue alone, the volume first, then on request the tractogram, timed from its fetch to its first draw read back.
BARE_PAGE = """<!doctype html><html><body style="margin:0">
<div style="width:%(width)dpx;height:%(height)dpx"><canvas id="gl"></canvas></div>
<script type="module">
import { Niivue } from "/vendor/niivue.js";
const nv = new Niivue(%(options)s);
await nv.attachToCanvas(document.getElementById("gl"));
await nv.loadVolumes([{ url: "/api/v1/files/%(volume)d/content", name: "t1.nii.gz" }]);
nv.setSliceType(nv.sliceTypeMultiplanar);
window.openTracts = async () => {
  nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
  const start = performance.now();
  const bytes = await (await fetch("/api/v1/files/%(tracts)d/content")).arrayBuffer();
  const mesh = await nv.addMeshFromUrl({ url: "tracts.tck", name: "tracts.tck", buffer: bytes });
  nv.drawScene();
  nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
  return [performance.now() - start, mesh.offsetPt0.length - 1];
};
window.ready = true;
</script></body></html>"""
# Both pages start from the volume drawn (a pixel read back waits for WebGL's queue); the viewer's
# time then runs from the double-click as the page sees it.
CLICKED = """() => {
    const nv = window.northancViewer.viewports[0].nv;
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
    document.addEventListener("dblclick", () => (window.benchClicked = performance.now()), { capture: true, once: true });
}"""
CANVAS_SIZE = "() => { const c = window.northancViewer.viewports[0].canvas; return [c.clientWidth, c.clientHeight]; }"
FIRST_SHOW = """(since) => {
    const shown = performance.getEntriesByName("fibre tract drawn", "measure").find((m) => m.startTime >= since);
    return shown ? shown.startTime + shown.duration - since : null;
}"""
SELECT = """async ([centre, radius]) => {
    const tool = window.northancFibreTool;
    // Every streamline kept again without drawing them all (seconds in software WebGL): the redraw timed is the selection's.
    tool.state.kept = new Uint8Array(tool.state.tract.lines.count).fill(1);
    const before = performance.getEntriesByType("measure").length;
    await tool.select(tool.Mode.SPHERE, { mode: tool.Mode.SPHERE, action: tool.Action.KEEP, points: [centre], radius });
    const mine = performance.getEntriesByType("measure").slice(before);
    const of = (name) => mine.find((m) => m.name === name).duration;
    return [of("fibre select"), of("fibre show"), tool.keptIndices(tool.state.kept).length];
}"""


@dataclass(frozen=True)
class Run:
    viewer_ms: float
    bare_ms: float
    select_ms: list[float]
    show_ms: list[float]
    kept: list[int]


def add_tractogram(archive: Archive, count: int) -> int:
    """The synthetic TCK in the volume's study, registered; its file id."""
    target = archive.layout.study_dir("bench", "VIEWER", "S1") / "dwi" / "tracts.tck"
    target.parent.mkdir(parents=True)
    write_tck(target, curves(count, seed=5, points=(20, 60), step_mm=2.0))
    log.info("%s: %d streamlines, %.0f MB", target.name, count, target.stat().st_size / 1e6)
    with archive.unit_of_work() as (session, _journal):
        project = session.query(Project).filter_by(name="bench").one()
        return add_files(session, archive.layout, project, [target])[0].id


def volume_file(archive: Archive, study_id: int) -> int:
    with archive.sessions() as session:
        return int(session.scalars(select(File.id).where(File.study_id == study_id, File.path == "t1/t1.nii.gz")).one())


def open_in_viewer(page: Page, study_id: int, tracts_id: int, count: int) -> float:
    page.goto(f"/p/bench/viewer?study={study_id}")
    page.wait_for_function("() => document.getElementById('viewer')?.dataset.ready", polling=100, timeout=120_000)
    if page.evaluate("() => document.getElementById('viewer').dataset.ready") != "1":
        raise RuntimeError(f"the viewer failed: {page.inner_text('#status')}")
    page.evaluate(CLICKED)
    page.dblclick(f"li[data-file-id='{tracts_id}']")
    page.wait_for_function("(count) => window.northancFibreTool.state.tract?.lines.count === count", arg=count, polling=50,
                           timeout=300_000)
    shown = page.evaluate(FIRST_SHOW, page.evaluate("() => window.benchClicked"))
    if shown is None:
        raise RuntimeError("the fibre tool did not draw the tractogram")
    return float(shown)


def open_on_bare_page(page: Page, volume_id: int, tracts_id: int, size: tuple[int, int], count: int) -> float:
    html = BARE_PAGE % {"width": size[0], "height": size[1], "options": NIIVUE_OPTIONS, "volume": volume_id, "tracts": tracts_id}

    def bare(route: Route) -> None:
        route.fulfill(body=html, content_type="text/html")

    page.route(f"**{BARE_PATH}", bare)
    page.goto(BARE_PATH)
    page.wait_for_function("() => window.ready", polling=100, timeout=120_000)
    elapsed, loaded = page.evaluate("() => window.openTracts()")
    if loaded != count:
        raise RuntimeError(f"the bare page's NiiVue read {loaded} streamlines of {count}")
    return float(elapsed)


def run(browser: Browser, base_url: str, study_id: int, ids: tuple[int, int], count: int) -> Run:
    volume_id, tracts_id = ids
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        log_in(page, "bench", PASSWORD)
        viewer_ms = open_in_viewer(page, study_id, tracts_id, count)
        width, height = page.evaluate(CANVAS_SIZE)
        rng = np.random.default_rng(len(page.url))
        timings = [page.evaluate(SELECT, [rng.uniform(-25, 25, 3).round(1).tolist(), SPHERE_MM]) for _ in range(SELECTIONS)]
        bare = context.new_page()
        bare_ms = open_on_bare_page(bare, volume_id, tracts_id, (int(width), int(height)), count)
    finally:
        context.close()
    return Run(viewer_ms, bare_ms, [t[0] for t in timings], [t[1] for t in timings], [int(t[2]) for t in timings])


def report(runs: list[Run], count: int) -> str:
    viewer = statistics.median(r.viewer_ms for r in runs)
    bare = statistics.median(r.bare_ms for r in runs)
    select = statistics.median(ms for r in runs for ms in r.select_ms)
    show = statistics.median(ms for r in runs for ms in r.show_ms)
    kept = statistics.median(k for r in runs for k in r.kept)
    worst = max(ms for r in runs for ms in r.select_ms)
    rows = [
        ["ms (median)", "value", "x bare page", "target"],
        ["bare page: NiiVue fetches, reads and draws the TCK", f"{bare:,.0f}", "1.00", ""],
        ["viewer: double-click to the tract drawn", f"{viewer:,.0f}", f"{viewer / bare:.2f}", f"<= {TARGET_RATIO}"],
        [f"sphere selection ({SPHERE_MM:g} mm; median {kept:,.0f} kept), worst {worst:,.0f}", f"{select:,.1f}", "",
         f"<= {TARGET_SELECTION_MS:g}"],
        ["kept streamlines drawn again (software WebGL)", f"{show:,.0f}", "", ""],
        ["selection and redraw", f"{select + show:,.0f}", "", ""],
    ]
    return f"{count:,} streamlines over a {'x'.join(map(str, VOLUME_SHAPE))} volume, {len(runs)} runs\n{table(rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streamlines", type=int, default=100_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-tracts-"))
    runs: list[Run] = []
    try:
        var = work / "var"
        archive, _token, study_id = prepare(var, f"sqlite:///{var / 'archive.sqlite'}", 2)
        tracts_id = add_tractogram(archive, args.streamlines)
        volume_id = volume_file(archive, study_id)
        portal = start_portal(archive.settings)
        try:
            with chromium() as browser:
                for number in range(args.runs):
                    runs.append(run(browser, portal.url, study_id, (volume_id, tracts_id), args.streamlines))
                    last = runs[-1]
                    log.info("run %d: viewer %s ms, bare page %s ms; selection %s ms, redraw %s ms (medians)", number + 1,
                             f"{last.viewer_ms:,.0f}", f"{last.bare_ms:,.0f}", f"{statistics.median(last.select_ms):,.1f}",
                             f"{statistics.median(last.show_ms):,.0f}")
        finally:
            portal.stop()
        archive.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s", report(runs, args.streamlines))


if __name__ == "__main__":
    main()
