"""The durable conversion queue in the archive database.

A request is keyed by the Orthanc series and the set of its instances: Orthanc's
STABLE_SERIES may fire again for the same series, and a repeat with the same instances
finds its row already there and adds nothing. Workers claim rows with a conditional
UPDATE (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several workers, in Orthanc or
on other hosts, never take the same row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from nifti_archive.db import rows_changed
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState, utcnow

ACTIVE = (ConversionState.PENDING, ConversionState.RUNNING)
RETRYABLE = (ConversionState.FAILED, ConversionState.QUARANTINED, ConversionState.DISCARDED)
# A request in one of these has had its conversion (superseded ones never will).
FINISHED = (*RETRYABLE, ConversionState.DONE, ConversionState.RELEASED)


def enqueue(
    session: Session,
    orthanc_series_id: str,
    instances_hash: str,
    instance_count: int,
    series_uid: str,
    reason: ConversionReason,
) -> bool:
    """Record a request unless one for this exact instance set exists; True when it was new."""
    values = {
        "orthanc_series_id": orthanc_series_id,
        "instances_hash": instances_hash,
        "instance_count": instance_count,
        "series_instance_uid": series_uid,
        "state": ConversionState.PENDING,
        "reason": reason,
        "attempts": 0,
        "message": "",
        "target": "",
        "worker": "",
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(ConversionRequest.__table__).values(values).on_conflict_do_nothing()
    return bool(rows_changed(session.execute(statement)))


def claim_next(sessions: sessionmaker[Session], worker: str) -> int | None:
    """The oldest pending request, now running for ``worker``; None when nothing is pending."""
    while True:
        with sessions() as session, session.begin():
            candidate = session.scalar(
                select(ConversionRequest.id)
                .where(ConversionRequest.state == ConversionState.PENDING)
                .order_by(ConversionRequest.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if candidate is None:
                return None
            claimed = rows_changed(session.execute(
                update(ConversionRequest)
                .where(ConversionRequest.id == candidate, ConversionRequest.state == ConversionState.PENDING)
                .values(
                    state=ConversionState.RUNNING,
                    worker=worker,
                    attempts=ConversionRequest.attempts + 1,
                    updated_at=utcnow(),
                )
            ))
            if claimed:
                return candidate
        # Another worker claimed the same row between our read and our update (SQLite has no
        # SKIP LOCKED): the next pending one is ours to try, not a reason to go idle.


def finish(
    session: Session, request_id: int, state: ConversionState, message: str = "", target: str = "", waiting_for: str = ""
) -> None:
    session.execute(
        update(ConversionRequest)
        .where(ConversionRequest.id == request_id)
        .values(state=state, message=message, target=target, waiting_for=waiting_for, updated_at=utcnow())
    )


def wake_waiting(session: Session, series_uid: str) -> int:
    """Requests that waited for this series to be converted go back to pending."""
    return rows_changed(
        session.execute(
            update(ConversionRequest)
            .where(ConversionRequest.state == ConversionState.WAITING, ConversionRequest.waiting_for == series_uid)
            .values(
                state=ConversionState.PENDING, reason=ConversionReason.SOURCE_CONVERTED, message="", waiting_for="",
                updated_at=utcnow(),
            )
        )
    )


def release_running(session: Session, worker_prefix: str) -> int:
    """Put back requests a worker of this host held when it died (the conversion never committed)."""
    return rows_changed(
        session.execute(
            update(ConversionRequest)
            .where(ConversionRequest.state == ConversionState.RUNNING, ConversionRequest.worker.startswith(worker_prefix))
            .values(state=ConversionState.PENDING, message="resumed after a restart", updated_at=utcnow())
        )
    )


def retry(session: Session, request_ids: Sequence[int] | None = None) -> int:
    """Failed (and quarantined or discarded, when named) requests back to pending."""
    condition = (
        ConversionRequest.id.in_(request_ids)
        if request_ids
        else ConversionRequest.state == ConversionState.FAILED
    )
    return rows_changed(
        session.execute(
            update(ConversionRequest)
            .where(condition, ConversionRequest.state.in_(RETRYABLE))
            .values(state=ConversionState.PENDING, reason=ConversionReason.RETRY, message="", updated_at=utcnow())
        )
    )


def reconvert(session: Session, orthanc_series_ids: Sequence[str]) -> int:
    """Ask again for the newest request of each series, whatever its state."""
    count = 0
    for series_id in orthanc_series_ids:
        newest = session.scalar(
            select(ConversionRequest)
            .where(ConversionRequest.orthanc_series_id == series_id, ConversionRequest.state != ConversionState.SUPERSEDED)
            .order_by(ConversionRequest.id.desc())
            .limit(1)
        )
        if newest is not None and newest.state not in ACTIVE:
            newest.state = ConversionState.PENDING
            newest.reason = ConversionReason.RECONVERT
            newest.message = ""
            count += 1
    session.flush()
    return count


def counts(session: Session) -> Counter[str]:
    rows = session.execute(select(ConversionRequest.state, func.count()).group_by(ConversionRequest.state))
    return Counter({state.value: n for state, n in rows})


def listing(session: Session, states: Sequence[ConversionState], limit: int = 200) -> list[ConversionRequest]:
    return list(
        session.scalars(
            select(ConversionRequest)
            .where(ConversionRequest.state.in_(states))
            .order_by(ConversionRequest.id)
            .limit(limit)
        )
    )


def is_idle(session: Session) -> bool:
    return not session.scalar(select(func.count()).select_from(ConversionRequest).where(ConversionRequest.state.in_(ACTIVE)))
