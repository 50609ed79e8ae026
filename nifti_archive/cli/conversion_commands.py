"""``nora`` actions around ingestion: import, the conversion queue's status, retry, reconvert."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sqlalchemy import select

from nifti_archive.archive import Archive, get_project
from nifti_archive.cli.commands import acting_user, project_name
from nifti_archive.cli.parser import Request
from nifti_archive.dropfolders import folders as dropfolders
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.ingest import conversion_queue, quarantine
from nifti_archive.ingest.importer import Importer, ImportOptions, compile_pattern, parse_extensions
from nifti_archive.models import ConversionRequest, ConversionState, File
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.query.selection import select_files
from nifti_archive.waiting import wait_until

SERIES_UID = re.compile(r"[0-9.]{3,64}")
POLL_SECONDS = 0.5


def wait_for_series(archive: Archive, series_uids: set[str], seconds: int, out: IO[str]) -> None:
    """Poll until every series has a finished request and none is still queued or running."""

    def settled() -> list[tuple[str, ConversionState]]:
        with archive.sessions() as session:
            rows = session.execute(
                select(ConversionRequest.series_instance_uid, ConversionRequest.state).where(
                    ConversionRequest.series_instance_uid.in_(series_uids)
                )
            ).all()
        active = {uid for uid, state in rows if state in conversion_queue.ACTIVE}
        finished = {uid for uid, state in rows if state in conversion_queue.FINISHED}
        return [(uid, state) for uid, state in rows] if not active and finished >= series_uids else []

    rows = wait_until(settled, seconds, "conversions to finish (see nora --status)", interval=POLL_SECONDS)
    failed = [uid for uid, state in rows if state is not ConversionState.DONE and state in conversion_queue.FINISHED]
    out.write(f"{len(series_uids)} series converted" + (f"; {len(failed)} failed or quarantined (see --status)" if failed else "") + "\n")


def do_import(archive: Archive, request: Request, out: IO[str]) -> None:
    args = request.args
    options = ImportOptions(
        project=project_name(request),
        patients_id=args.patients_id,
        studies_id=args.studies_id,
        pattern=compile_pattern(args.pattern) if args.pattern else None,
        extra_extensions=parse_extensions(args.extrafiles_filter) if args.extrafiles_filter else frozenset(),
    )
    report = Importer(archive, orthanc_for(archive.settings), options).run(Path(args.import_path))
    if not (report.stored or report.already_stored or report.extras):
        raise InvalidValue(f"nothing imported from {args.import_path}: no DICOM in it (see the warnings above)")
    out.write(
        f"stored {report.stored} DICOM file(s) in {len(report.series)} series"
        f" ({report.already_stored} already in Orthanc), {report.extras} extra file(s), skipped {len(report.skipped)}\n"
    )
    for name, reason in report.skipped:
        out.write(f"  skipped {name}: {reason}\n")
    if args.wait is not None and report.series:
        wait_for_series(archive, report.series, args.wait, out)


def do_status(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.sessions() as session:
        counts = conversion_queue.counts(session)
        out.write(" ".join(f"{state.value}={counts.get(state.value, 0)}" for state in ConversionState) + "\n")
        listed = (
            ConversionState.PENDING, ConversionState.RUNNING, ConversionState.WAITING, ConversionState.FAILED, ConversionState.QUARANTINED,
        )
        for row in conversion_queue.listing(session, listed):
            out.write(
                f"{row.id}\t{row.state.value}\t{row.series_instance_uid}\t{row.instance_count} instance(s)"
                f"\t{row.target}\t{row.message}\n"
            )
        for line in dropfolders.status_lines(session, archive.settings):
            out.write(line + "\n")


def do_retry(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, _journal):
        count = conversion_queue.retry(session, request.args.retry or None)
    out.write(f"{count} conversion(s) queued again\n")


def _series_ids_for(archive: Archive, request: Request) -> tuple[list[str], set[str]]:
    target = request.args.reconvert
    rows: Sequence[tuple[str | None, str | None]] = []
    with archive.sessions() as session:
        if SERIES_UID.fullmatch(target):
            rows = session.execute(
                select(ConversionRequest.orthanc_series_id, ConversionRequest.series_instance_uid)
                .where(ConversionRequest.series_instance_uid == target)
                .distinct()
            ).tuples().all()
        else:
            project = get_project(session, project_name(request))
            file_ids = [item.file_id for item in select_files(session, project, target)]
            if file_ids:
                rows = session.execute(
                    select(File.orthanc_series_id, File.source_series_uid)
                    .where(File.id.in_(file_ids), File.orthanc_series_id.is_not(None))
                    .distinct()
                ).tuples().all()
    if not rows:
        raise NotFound(f"no converted series matches {target!r}")
    # Both queries select series with an Orthanc id; a file's source series UID may be unknown.
    return [str(series_id) for series_id, _ in rows], {uid for _, uid in rows if uid}


def do_reconvert(archive: Archive, request: Request, out: IO[str]) -> None:
    series_ids, uids = _series_ids_for(archive, request)
    if request.args.dry_run:
        # Imported here, not at the top: nibabel and numpy would add a second to every nora call.
        from nifti_archive.ingest import reconversion_diff

        diffs = reconversion_diff.preview(archive, orthanc_for(archive.settings), series_ids)
        if request.args.json:
            out.write(json.dumps(reconversion_diff.as_json(diffs), indent=2) + "\n")
        else:
            out.write(reconversion_diff.text_report(diffs))
        return
    with archive.unit_of_work() as (session, _journal):
        count = conversion_queue.reconvert(session, series_ids)
    out.write(f"{count} series queued for conversion from Orthanc\n")
    if request.args.wait is not None:
        wait_for_series(archive, uids, request.args.wait, out)


def do_release(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        decision = quarantine.release(
            session, journal, archive, project, request.args.release, acting_user(), request.args.reason or ""
        )
    out.write(f"released conversion {decision.request_id}: {decision.files} file(s) in {decision.target}\n")


def do_discard(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        decision = quarantine.discard(session, archive, project, request.args.discard, acting_user(), request.args.reason or "")
    quarantine.remove_discarded(archive, project.name, decision.request_id)
    out.write(f"discarded conversion {decision.request_id} ({decision.files} file(s)); --retry {decision.request_id} converts it again\n")


CONVERSION_COMMANDS = {
    "import_path": do_import,
    "status": do_status,
    "retry": do_retry,
    "reconvert": do_reconvert,
    "release": do_release,
    "discard": do_discard,
}
