"""The Northanc plugin inside Orthanc: thin callbacks, a durable queue, worker threads.

The change callback only puts series ids on an in-memory queue; an enqueuer thread turns
them into rows of the durable queue, and worker threads convert. Nothing slow ever runs
on Orthanc's single change thread. At start the plugin takes back requests its workers
held when Orthanc last stopped, and enqueues every series whose current set of instances
has no request yet (Orthanc does not fire STABLE_SERIES for a series that was still
arriving when it stopped).
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections.abc import Callable

import orthanc
from sqlalchemy import select

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
        self.work_waiting = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.worker_prefix = f"{socket.gethostname()}:orthanc:"
        self.started = threading.Event()

    def on_change(self, change_type: int, _level: int, resource_id: str) -> None:
        if change_type == orthanc.ChangeType.STABLE_SERIES:
            self.stable_series.put(resource_id)
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
        self._spawn(self._enqueue_loop, "northanc-enqueuer")
        for number in range(max(1, self.settings.conversion_workers)):
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

    def _enqueue(self, series_id: str, reason: ConversionReason) -> None:
        series = get_json(self.api, f"/series/{series_id}")
        instances = series["Instances"]
        with self.archive.unit_of_work() as (session, _journal):
            added = conversion_queue.enqueue(
                session,
                series_id,
                instances_hash(instances),
                len(instances),
                series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""),
                reason,
            )
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
