"""The Northanc plugin inside Orthanc: thin callbacks, a durable queue, worker threads.

The change callback only puts series ids on in-memory queues; an enqueuer thread turns
them into rows of the durable queue, and worker threads convert. Nothing slow ever runs
on Orthanc's single change thread. At start the plugin takes back requests its workers
held when Orthanc last stopped, and enqueues every series whose current set of instances
has no request yet (Orthanc does not fire STABLE_SERIES for a series that was still
arriving when it stopped).

A new series sent over DICOM is enqueued as soon as its senders are done, before Orthanc's
StableAge: once no association has been open on Orthanc's DICOM port for
``SENDER_QUIET_SECONDS``, no instance can still be on its way (Orthanc stores an instance
before it answers the C-STORE). A series whose instances came otherwise (REST, plugins),
or that Orthanc counts as missing instances by the sender's own announcement, waits for
STABLE_SERIES as before; so do instances added later to a known series, which re-convert.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orthanc
from sqlalchemy import select

from nifti_archive import hooks
from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.ingest.conversion import scratch_cleanup, work_one
from nifti_archive.models import ConversionReason, ConversionRequest
from nifti_archive.orthanc_api import OrthancUnavailable, get_json, instances_hash, list_series
from nifti_archive.pacs import dicom_nodes
from nifti_archive.settings import load_settings
from orthanc_plugin.deployment import READY_ROUTE

log = logging.getLogger("northanc.plugin")
IDLE_WAIT_SECONDS = 1.0
# How long the DICOM port must have had no association open before the series that arrived
# count as sent: a sender that opens one association per instance (or per transfer syntax)
# reconnects within milliseconds (storescu started anew: 35 ms on a busy 2-core machine),
# and one that pauses longer re-converts like any late instance does.
SENDER_QUIET_SECONDS = 0.25
SENDER_POLL_SECONDS = 0.05
# Instances that reached Orthanc over C-STORE (its "Origin" metadata).
DICOM_ORIGIN = "DicomProtocol"
# Orthanc's series status when the sender's announced count says instances are still missing.
ANNOUNCED_INCOMPLETE = frozenset({"Missing", "Incomplete", "Inconsistent"})
# Orthanc's error code for a resource it does not have (HTTP 404 over REST).
UNKNOWN_RESOURCE = 17


class InProcessOrthanc:
    """OrthancApi through the plugin SDK: no HTTP, no credentials, the bytes as received."""

    def get(self, uri: str) -> bytes:
        try:
            return bytes(orthanc.RestApiGet(uri))
        except orthanc.OrthancException as exc:
            # As over HTTP: a resource Orthanc does not have is a 404, anything else a server fault.
            status = 404 if exc.args and exc.args[0] == UNKNOWN_RESOURCE else 500
            raise OrthancUnavailable(f"Orthanc refused GET {uri}: {exc}", status) from exc

    def dicom(self, instance_id: str) -> bytes:
        return bytes(orthanc.GetDicomForInstance(instance_id))


class DicomPort:
    """Whether an association is open on Orthanc's DICOM port, from the kernel's socket tables."""

    # TCP states of a connection that may still carry a C-STORE: SYN_RECV, ESTABLISHED, CLOSE_WAIT.
    OPEN_STATES = frozenset({"03", "01", "08"})
    TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))

    def __init__(self, port: int) -> None:
        self.port = f"{port:04X}"

    def readable(self) -> bool:
        return self.TABLES[0].is_file()

    def busy(self) -> bool:
        return any(self._open(table) for table in self.TABLES if table.is_file())

    def _open(self, table: Path) -> bool:
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == self.port and fields[3] in self.OPEN_STATES:
                return True
        return False


class OrthancLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            orthanc.LogError(message)
        elif record.levelno >= logging.WARNING:
            orthanc.LogWarning(message)
        else:
            orthanc.LogInfo(message)


class Plugin:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.archive = Archive(self.settings)
        self.api = InProcessOrthanc()
        self.stable_series: queue.Queue[str] = queue.Queue()
        self.new_series: queue.Queue[str] = queue.Queue()
        self.dicom_port = DicomPort(self.settings.orthanc_dicom_port)
        self.watching_senders = False
        self.work_waiting = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.worker_prefix = f"{socket.gethostname()}:orthanc:"
        self.started = threading.Event()

    def on_change(self, change_type: int, _level: int, resource_id: str) -> None:
        if change_type == orthanc.ChangeType.STABLE_SERIES:
            self.stable_series.put(resource_id)
        elif change_type == orthanc.ChangeType.NEW_SERIES and self.watching_senders:
            self.new_series.put(resource_id)
        elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
            self.start()
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            self.stop()

    def start(self) -> None:
        self.archive.check_schema()
        self._register_dicom_nodes()
        with self.archive.unit_of_work() as (session, _journal):
            resumed = conversion_queue.release_running(session, self.worker_prefix)
        if resumed:
            log.warning("resuming %d conversion(s) interrupted by the last stop", resumed)
        scratch_cleanup(self.archive)
        try:
            hooks.preload()
        except Exception:
            log.exception("could not load the archive's hooks; conversions that call them fail")
        self._spawn(self._enqueue_loop, "northanc-enqueuer")
        if self.dicom_port.readable():
            self.watching_senders = True
            self._spawn(self._sent_loop, "northanc-sent")
        else:
            log.warning("cannot see DICOM associations here; new series wait for Orthanc's StableAge")
        # None at all is a deployment whose conversions run in `nora worker` processes elsewhere.
        for number in range(self.settings.conversion_workers):
            self._spawn(self._work_loop, f"northanc-worker-{number}", f"{self.worker_prefix}{number}")
        self.started.set()

    def answer_ready(self, output: orthanc.RestOutput, _uri: str, **_request: object) -> None:
        # Orthanc answers HTTP before it reports ORTHANC_STARTED: until then its DICOM peers and
        # senders are not declared yet, and a C-STORE from a registered sender would be refused.
        if self.started.is_set():
            output.AnswerBuffer(json.dumps({"ready": True}), "application/json")
        else:
            body = "starting"
            output.SendHttpStatus(503, body, len(body))

    def _register_dicom_nodes(self) -> None:
        """The archive keeps the PACS peers and senders; Orthanc learns them anew at every start."""
        try:
            with self.archive.sessions() as session:
                dicom_nodes.register_all(lambda uri, document: orthanc.RestApiPut(uri, json.dumps(document)), session)
        except Exception:
            log.exception("could not declare the PACS peers and senders to Orthanc; "
                          "their queries and C-STOREs fail until the next start")

    def _spawn(self, target: Callable[..., object], name: str, *args: object) -> None:
        # Daemon threads: a non-daemon thread would keep Orthanc from ever exiting.
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.work_waiting.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.archive.close()

    def _enqueue(self, series_id: str, reason: ConversionReason, series: dict[str, Any] | None = None) -> None:
        self._enqueue_all([(series_id, series or get_json(self.api, f"/series/{series_id}"))], reason)

    def _enqueue_all(self, found: list[tuple[str, dict[str, Any]]], reason: ConversionReason) -> None:
        # One transaction for many series: on SQLite every write transaction queues for the
        # database's single write lock, which the workers hold while they register.
        if not found:
            return
        added = []
        with self.archive.unit_of_work() as (session, _journal):
            for series_id, series in found:
                instances = series["Instances"]
                if conversion_queue.enqueue(
                    session,
                    series_id,
                    instances_hash(instances),
                    len(instances),
                    series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""),
                    reason,
                ):
                    added.append((series_id, len(instances)))
        for series_id, count in added:
            log.info("enqueued series %s of %d instances (%s)", series_id, count, reason.value)
        if added:
            self.work_waiting.set()

    def _reconcile(self) -> None:
        with self.archive.sessions() as session:
            known = {
                (series_id, digest)
                for series_id, digest in session.execute(
                    select(ConversionRequest.orthanc_series_id, ConversionRequest.instances_hash)
                )
            }
        known_series = {series_id for series_id, _ in known}
        for series_id in list_series(self.api):
            if self.stopping.is_set():
                return
            series = get_json(self.api, f"/series/{series_id}")
            if not series.get("IsStable", True) and series_id not in known_series:
                continue  # still arriving: STABLE_SERIES will come
            if (series_id, instances_hash(series["Instances"])) not in known:
                self._enqueue(series_id, ConversionReason.STARTUP)

    def _enqueue_loop(self) -> None:
        try:
            self._reconcile()
        except Exception:
            log.exception("start-up reconciliation failed; new series are still converted")
        while not self.stopping.is_set():
            try:
                series_id = self.stable_series.get(timeout=IDLE_WAIT_SECONDS)
            except queue.Empty:
                continue
            try:
                self._enqueue(series_id, ConversionReason.STABLE_SERIES)
            except Exception:
                log.exception("could not enqueue series %s; the next start enqueues it", series_id)

    def _sent_loop(self) -> None:
        """Enqueue new series as soon as no association has been open for SENDER_QUIET_SECONDS."""
        arrived: set[str] = set()
        quiet_since = time.monotonic()
        while not self.stopping.is_set():
            if not arrived:
                try:
                    arrived.add(self.new_series.get(timeout=IDLE_WAIT_SECONDS))
                except queue.Empty:
                    continue
                # The port may have been quiet for long; count from now, when it is first seen.
                quiet_since = time.monotonic()
            while not self.new_series.empty():
                arrived.add(self.new_series.get())
            if self.dicom_port.busy():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= SENDER_QUIET_SECONDS:
                arrived = self._enqueue_sent(arrived)
                continue
            self.stopping.wait(SENDER_POLL_SECONDS)

    def _enqueue_sent(self, series_ids: Iterable[str]) -> set[str]:
        """Enqueue the series whose senders are done; returns those to look at again (the port got busy)."""
        found = []
        for series_id in series_ids:
            try:
                series = get_json(self.api, f"/series/{series_id}")
                if series.get("IsStable") or series.get("Status") in ANNOUNCED_INCOMPLETE:
                    continue  # STABLE_SERIES has come or decides
                if self._all_by_dicom(series["Instances"]):
                    found.append((series_id, series))
            except OrthancUnavailable as exc:
                if exc.status != 404:  # a series deleted meanwhile needs nothing
                    log.exception("could not enqueue series %s; StableAge enqueues it", series_id)
            except Exception:
                log.exception("could not enqueue series %s; StableAge enqueues it", series_id)
        # Checked after the lookups: an association opened meanwhile may carry more of these series.
        if self.dicom_port.busy():
            return {series_id for series_id, _series in found}
        try:
            self._enqueue_all(found, ConversionReason.SENT)
        except Exception:
            log.exception("could not enqueue %d sent series; StableAge enqueues them", len(found))
        return set()

    def _all_by_dicom(self, instance_ids: Iterable[str]) -> bool:
        return all(self.api.get(f"/instances/{i}/metadata/Origin").decode().strip() == DICOM_ORIGIN for i in instance_ids)

    def _work_loop(self, worker: str) -> None:
        while not self.stopping.is_set():
            try:
                did_work = work_one(self.archive, self.api, worker)
            except Exception:
                log.exception("conversion worker %s hit an error", worker)
                did_work = False
            if not did_work:
                self.work_waiting.wait(IDLE_WAIT_SECONDS)
                self.work_waiting.clear()


def install() -> None:
    handler = OrthancLogHandler()
    handler.setFormatter(logging.Formatter("northanc %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    plugin = Plugin()
    orthanc.RegisterOnChangeCallback(plugin.on_change)
    orthanc.RegisterRestCallback(READY_ROUTE, plugin.answer_ready)
