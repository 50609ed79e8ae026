"""Benchmark of the viewer's first slice of a 256x256x176 volume in Debian's Chromium without a GPU.

Run from the repository root:  .venv/bin/python -m bench.viewer [--runs N]

The archive (SQLite, the embedded default), the volume and the account are bench/portal's
(``prepare``). Chromium runs WebGL in
software (SwiftShader), as on thin clients and remote desktops. Each run is a fresh browser
context: a first visit (nothing cached, NiiVue's code compiled from scratch), then two more
visits from another page of the portal, the last of which counts as a later visit. The page
splits the opening of a volume into performance measures (viewer.js ``Measure``): fetch,
inflate, the preview's central slices painted, NiiVue's parse, texture upload and first draw;
the times are from the page's navigation. The gradient volume, which NiiVue 0.69.0 computes on
every load and the portal's copy only for the shaders that sample it, is timed on request after
a later visit. Beside them in the same page: a plain ``fetch`` of the file (the floor), and each
later visit again with NiiVue as published (the baseline: its gradient on every load).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from playwright.sync_api import Browser, Page, Route

from bench.common import table
from bench.portal import PASSWORD, VOLUME_SHAPE, prepare
from portal.app import FRONTEND
from portal.pages.viewer import NIIVUE
from testbed.portal import chromium, log_in, start_portal

log = logging.getLogger("bench.viewer")


class Part(Enum):
    """The page's performance measures of opening a volume, in the order they happen."""

    FETCH = "viewer fetch"
    INFLATE = "viewer inflate"
    PREVIEW = "viewer preview"
    PARSE = "viewer parse"
    UPLOAD = "viewer texture upload"
    DRAW = "viewer first draw"


class Visit(Enum):
    FIRST = "first visit"
    LATER = "later visit"
    PUBLISHED = "later visit, NiiVue as published"


@dataclass(frozen=True)
class Timing:
    """One visit: per part its start and end (ms from navigation); the plain fetch's ms; the gradient's ms."""

    parts: dict[Part, tuple[float, float]]
    fetch_ms: float
    gradient_ms: float | None


MEASURES = """(names) => Object.fromEntries(names.map((name) => {
    const [entry] = performance.getEntriesByName(name, "measure");
    return [name, entry ? [entry.startTime, entry.startTime + entry.duration] : null];
}))"""
# What the user sees, read back: lit pixels on the preview's canvas (it stays drawn once hidden)
# and on NiiVue's canvas, drawn once more and read back.
LIT = """() => {
    const viewport = window.northancViewer.viewports[0];
    const preview = viewport.preview.canvas;
    const shown = preview.getContext("2d").getImageData(0, 0, preview.width, preview.height).data;
    const nv = viewport.nv, gl = nv.gl;
    nv.drawScene();
    const drawn = new Uint8Array(4 * gl.drawingBufferWidth * gl.drawingBufferHeight);
    gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, drawn);
    const lit = (pixels) => { let n = 0; for (let i = 0; i < pixels.length; i += 4) if (pixels[i] > 40) n++; return n; };
    return [lit(shown), lit(drawn)];
}"""
PLAIN_FETCH = """async (id) => {
    const start = performance.now();
    await (await fetch(`/api/v1/files/${id}/content`)).arrayBuffer();
    return performance.now() - start;
}"""
GRADIENT = """() => {
    const nv = window.northancViewer.viewports[0].nv, gl = nv.gl;
    const start = performance.now();
    nv.gradientGL(nv.back.hdr);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    return performance.now() - start;
}"""


def published_niivue(route: Route) -> None:
    route.fulfill(path=FRONTEND / "node_modules" / NIIVUE, content_type="text/javascript",
                  headers={"Cache-Control": "public, max-age=3600"})


def visit(page: Page, study_id: int, gradient: bool) -> Timing:
    """From another page of the portal to the viewer, as a user opens it from the table."""
    page.goto("/projects")
    page.goto(f"/p/bench/viewer?study={study_id}")
    page.wait_for_function("() => document.getElementById('viewer')?.dataset.ready", polling=100, timeout=120_000)
    if page.evaluate("() => document.getElementById('viewer').dataset.ready") != "1":
        raise RuntimeError(f"the viewer failed: {page.inner_text('#status')}")
    found = page.evaluate(MEASURES, [part.value for part in Part])
    missing = [name for name, span in found.items() if span is None]
    if missing:
        raise RuntimeError(f"the page did not measure {', '.join(missing)}")
    shown, drawn = page.evaluate(LIT)
    if shown < 5000 or drawn < 5000:
        raise RuntimeError(f"lit pixels: {shown} on the preview, {drawn} on NiiVue's canvas")
    file_id = page.evaluate("() => window.northancViewer.viewports[0].layers[0].file_id")
    return Timing(
        parts={part: tuple(found[part.value]) for part in Part},
        fetch_ms=float(page.evaluate(PLAIN_FETCH, file_id)),
        gradient_ms=float(page.evaluate(GRADIENT)) if gradient else None,
    )


def run(browser: Browser, base_url: str, study_id: int, published: bool) -> dict[Visit, Timing]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        if published:
            page.route("**/vendor/niivue.js", published_niivue)
        log_in(page, "bench", PASSWORD)
        first = visit(page, study_id, gradient=False)
        visit(page, study_id, gradient=False)
        later = visit(page, study_id, gradient=not published)
    finally:
        context.close()
    return {Visit.PUBLISHED: later} if published else {Visit.FIRST: first, Visit.LATER: later}


def median(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}"


def report(timings: dict[Visit, list[Timing]]) -> str:
    floor = statistics.median(t.fetch_ms for ts in timings.values() for t in ts)
    visits = list(Visit)
    milestones = [["from navigation, ms (median)", *(v.value for v in visits), "x fetch (later visit)"]]
    for part, label in ((Part.FETCH, "volume fetched"), (Part.PREVIEW, "first slices lit: the preview painted"),
                        (Part.PARSE, "NiiVue: parsed"), (Part.UPLOAD, "NiiVue: texture uploaded"),
                        (Part.DRAW, "NiiVue: first draw read back")):
        ends = {v: statistics.median(t.parts[part][1] for t in timings[v]) for v in visits}
        milestones.append([label, *(f"{ends[v]:,.0f}" for v in visits), f"{ends[Visit.LATER] / floor:.1f}"])
    parts = [["part, ms (median)", *(v.value for v in visits)]]
    for part in Part:
        parts.append([part.value, *(median([t.parts[part][1] - t.parts[part][0] for t in timings[v]]) for v in visits)])
    gradients = [t.gradient_ms for t in timings[Visit.LATER] if t.gradient_ms is not None]
    parts.append(["gradient volume (on request; on every load as published)", "", median(gradients), "in its upload"])
    parts.append(["plain fetch of the file (floor)", *(median([t.fetch_ms for t in timings[v]]) for v in visits)])
    return f"{table(milestones)}\n\n{table(parts)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    timings: dict[Visit, list[Timing]] = {v: [] for v in Visit}
    try:
        var = work / "var"
        archive, _token, study_id = prepare(var, f"sqlite:///{var / 'archive.sqlite'}", 2)
        portal = start_portal(archive.settings)
        try:
            with chromium() as browser:
                for number in range(args.runs):
                    for published in (False, True):
                        for kind, timing in run(browser, portal.url, study_id, published).items():
                            timings[kind].append(timing)
                    log.info("run %d: first lit %s ms (first visit), %s ms (later); NiiVue drawn %s ms, as published %s ms",
                             number + 1, *(f"{timings[v][-1].parts[p][1]:,.0f}" for v, p in (
                                 (Visit.FIRST, Part.PREVIEW), (Visit.LATER, Part.PREVIEW),
                                 (Visit.LATER, Part.DRAW), (Visit.PUBLISHED, Part.DRAW))))
        finally:
            portal.stop()
        archive.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = "x".join(map(str, VOLUME_SHAPE))
    log.info("the viewer opening a %s int16 volume, %d runs, Chromium without a GPU\n%s", shape, args.runs, report(timings))


if __name__ == "__main__":
    main()
