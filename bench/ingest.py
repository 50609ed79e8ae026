"""Benchmark of ingestion: the test data sets (tests/data) sent with dcmtk's storescu.

Run from the repository root:  .venv/bin/python -m bench.ingest [--skip-slow-baseline]

For each data set alone and for both together, in one run, it times
  (a) a plain Orthanc (no plugin) accepting the instances over C-STORE,
  (b) dcm2niix alone converting the same series from disk (Northanc's flags),
  (c) Northanc: from the first instance sent to the last NIfTI registered (this includes
      waiting until a series counts as complete: its senders done, or Orthanc's StableAge),
and prints instances/s for each and the ratio c / (a + b) of the times. It splits (c) into
its phases from the plugin's log (Orthanc is switched to verbose logging for that): the
time from the last instance stored to the last series enqueued, the seconds the workers
spent per phase (series lookup, fetching instances, dcm2niix, registration), and the CPU
seconds of Orthanc (C-STORE and the plugin's Python), of dcm2niix and of storescu. For both
data sets together it also times (a) over 4 parallel associations, and once more without
TCP_NODELAY / TCP_BUFFER_LENGTH in the DICOM endpoints' environment, the cause of Orthanc's
slow C-STORE as shipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from bench.common import table
from nifti_archive.ingest import converter
from nifti_archive.ingest.conversion import Phase
from nifti_archive.settings import Settings
from orthanc_plugin import deployment
from testbed.northanc import Northanc, by_transfer_syntax, northanc_settings, storescu
from tests.reference import input_files, references

log = logging.getLogger("bench.ingest")

DATA_SETS = ("dcm_qa", "dcm_qa_nih")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Orthanc's log lines: "I1202 22:50:01.123456 PluginsManager.cpp:161] (plugins) northanc <logger>: <message>".
LOG_LINE = re.compile(r"^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+) .*?\] (?:\(plugins\) )?northanc \S+: (.*)$")
ENQUEUED = re.compile(r"enqueued series \S+ of \d+ instances \((\S+)\)")
PHASES = re.compile(r"conversion request \d+ of \d+ instances took (.*) seconds")


@dataclass(frozen=True)
class DataSet:
    name: str
    files: list[Path]
    series: int

    @property
    def instances(self) -> int:
        return sum(1 for f in self.files if not f.name.lower().endswith((".txt", ".nii")))

    @property
    def folders(self) -> list[Path]:
        return sorted({f.parent for f in self.files if not f.name.lower().endswith((".txt", ".nii"))})


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a process: its own (all threads) and its reaped children's."""

    own: float
    children: float

    @classmethod
    def of(cls, pid: int) -> Cpu:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(v) / CLOCK_TICKS for v in fields[11:15])
        return cls(utime + stime, cutime + cstime)

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own - other.own, self.children - other.children)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One timed run of (a) or (c)."""

    received: float
    total: float
    orthanc_cpu: Cpu
    storescu_cpu: float
    # (c) only, from the plugin's log: seconds from the start to each series' enqueue, the
    # reason of each, the worker seconds per phase.
    enqueued: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=dict)


def send(files: list[Path], port: int, tcp_settings: bool, associations: int) -> tuple[float, float]:
    """Seconds and storescu's CPU seconds over ``associations`` parallel associations, each taking whole series folders."""
    folders = sorted({f.parent for f in files})
    chunks = [by_transfer_syntax(f for f in files if folders.index(f.parent) % associations == i) for i in range(associations)]
    cpu = children_cpu()
    start = time.perf_counter()
    with ThreadPoolExecutor(associations) as pool:
        list(pool.map(lambda chunk: storescu(chunk, port, tcp_settings=tcp_settings), chunks))
    return time.perf_counter() - start, children_cpu() - cpu


def plain_orthanc(settings: Settings, files: list[Path], tcp_settings: bool, associations: int = 1) -> Run:
    from nifti_archive.installation import write_secrets

    write_secrets(settings)
    original = deployment.DICOM_TCP_ENVIRONMENT.copy()
    if not tcp_settings:
        deployment.DICOM_TCP_ENVIRONMENT.clear()
    try:
        orthanc = deployment.start_orthanc(settings, with_plugin=False)
    finally:
        deployment.DICOM_TCP_ENVIRONMENT.update(original)
    try:
        orthanc.wait_ready()
        before = Cpu.of(orthanc.process.pid)
        seconds, storescu_cpu = send(files, settings.orthanc_dicom_port, tcp_settings, associations)
        return Run(seconds, seconds, Cpu.of(orthanc.process.pid) - before, storescu_cpu)
    finally:
        orthanc.stop()


def dcm2niix_alone(data: DataSet, work: Path) -> float:
    start = time.perf_counter()
    for index, folder in enumerate(data.folders):
        converter.convert(folder, work / f"out{index}")
    return time.perf_counter() - start


def _plugin_lines(log_path: Path, offset: int) -> list[tuple[float, str]]:
    """The plugin's log lines written after ``offset``, with their wall-clock time."""
    year = datetime.now().year
    found = []
    with log_path.open("rb") as fh:
        fh.seek(offset)
        for raw in fh:
            match = LOG_LINE.match(raw.decode(errors="replace").rstrip())
            if match:
                month, day, hour, minute, second, fraction, message = match.groups()
                stamp = datetime(year, int(month), int(day), int(hour), int(minute), int(second)).timestamp()
                found.append((stamp + float(f"0.{fraction}"), message))
    return found


def northanc_run(settings: Settings, data: DataSet) -> Run:
    """(c), with its profile from the plugin's log."""
    northanc = Northanc.start(settings)
    groups = by_transfer_syntax(data.files)
    try:
        # The plugin's timings are info lines: verbose overall and for the plugins' category.
        for uri in ("/tools/log-level", "/tools/log-level-plugins"):
            answer = northanc.rest.stream("PUT", uri, {}, b"verbose")
            if answer.status != 200:
                raise RuntimeError(f"Orthanc refused verbose logging at {uri}: {answer.status} {answer.read()!r}")
            answer.close()
        offset = northanc.orthanc.log_path.stat().st_size
        pid = northanc.orthanc.process.pid
        before, storescu_before = Cpu.of(pid), children_cpu()
        wall, start = time.time(), time.perf_counter()
        northanc.storescu(groups)
        received = time.perf_counter() - start
        storescu_cpu = children_cpu() - storescu_before
        counts = northanc.wait_for_conversions(data.series, timeout=600)
        orthanc_cpu = Cpu.of(pid) - before
        if counts != {"done": data.series}:
            raise RuntimeError(f"not every series converted: {counts}")
    finally:
        northanc.stop()
    # Read once Orthanc has stopped and flushed its log. The end is when the plugin logged the
    # last registration, not when polling noticed it.
    run = Run(received, 0.0, orthanc_cpu, storescu_cpu)
    lines = _plugin_lines(northanc.orthanc.log_path, offset)
    for stamp, message in lines:
        if enqueued := ENQUEUED.search(message):
            run.enqueued.append(stamp - wall)
            run.reasons[enqueued.group(1)] += 1
        elif phases := PHASES.search(message):
            run.total = max(run.total, stamp - wall)
            for pair in phases.group(1).split():
                name, seconds = pair.split("=")
                run.phases[name] = run.phases.get(name, 0.0) + float(seconds)
    if not run.total:
        raise RuntimeError(f"no conversion timings among the plugin's {len(lines)} log lines: {lines[:3]}")
    return run


def report(data: DataSet, a: Run, b: float, c: Run, stable_age: int) -> str:
    n = data.instances
    rows = [["what", "seconds", "instances/s"],
            ["(a) plain Orthanc, C-STORE with TCP settings", f"{a.total:.2f}", f"{n / a.total:.0f}"],
            ["(b) dcm2niix alone from disk", f"{b:.2f}", f"{n / b:.0f}"],
            ["    Northanc, C-STORE of all instances (converting meanwhile)", f"{c.received:.2f}", f"{n / c.received:.0f}"],
            [f"(c) Northanc, first instance to last NIfTI (StableAge {stable_age} s)", f"{c.total:.2f}", f"{n / c.total:.0f}"]]
    last_enqueued = max(c.enqueued, default=c.received)
    profile = [["(c) split", "seconds"],
               ["first instance sent to last instance stored", f"{c.received:.2f}"],
               ["last instance stored to last series enqueued (senders done or StableAge)",
                f"{max(0.0, last_enqueued - c.received):.2f}"],
               ["last series enqueued to last NIfTI registered", f"{c.total - max(last_enqueued, c.received):.2f}"]]
    profile += [[f"worker seconds, all series: {phase.value}", f"{c.phases.get(phase.value, 0.0):.2f}"] for phase in Phase]
    profile += [["CPU: Orthanc with the plugin (C-STORE and Python)", f"{c.orthanc_cpu.own:.2f}"],
                ["CPU: plain Orthanc for the same C-STORE (a)", f"{a.orthanc_cpu.own:.2f}"],
                ["CPU: dcm2niix under the plugin", f"{c.orthanc_cpu.children:.2f}"],
                ["CPU: storescu", f"{c.storescu_cpu:.2f}"]]
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(c.reasons.items()))
    return (f"{data.name}: {n} instances in {data.series} series\n{table(rows)}\n"
            f"ratio c / (a + b) = {c.total / (a.total + b):.2f}\n{table(profile)}\nseries enqueued by: {reasons}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-slow-baseline", action="store_true", help="skip (a) without the TCP settings")
    parser.add_argument("--stable-age", type=int, default=Settings.stable_age, help="Orthanc's StableAge for (c)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    alone = [DataSet(name, input_files(name), len(references(name))) for name in DATA_SETS]
    both = DataSet(" + ".join(DATA_SETS), [f for d in alone for f in d.files], sum(d.series for d in alone))
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        reports = []
        for index, data in enumerate([*alone, both]):
            a = plain_orthanc(northanc_settings(work / f"a{index}"), data.files, tcp_settings=True)
            b = dcm2niix_alone(data, work / f"b{index}")
            c = northanc_run(replace(northanc_settings(work / f"c{index}"), stable_age=args.stable_age), data)
            reports.append(report(data, a, b, c, args.stable_age))
        rows = [["both data sets, other senders", "seconds", "instances/s"]]
        parallel = plain_orthanc(northanc_settings(work / "a4"), both.files, tcp_settings=True, associations=4)
        rows.append(["plain Orthanc, C-STORE over 4 parallel associations", f"{parallel.total:.2f}",
                     f"{both.instances / parallel.total:.0f}"])
        if not args.skip_slow_baseline:
            slow = plain_orthanc(northanc_settings(work / "a0"), both.files, tcp_settings=False)
            rows.append(["plain Orthanc, C-STORE as shipped (no TCP settings)", f"{slow.total:.2f}",
                         f"{both.instances / slow.total:.0f}"])
        log.info("%s\n%s", "\n".join(reports), table(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
