"""The durable conversion queue in the archive database.

A request is keyed by the Orthanc series and the set of its instances: Orthanc's
STABLE_SERIES may fire again for the same series, and a repeat with the same instances
finds its row already there and adds nothing. Workers claim rows with a conditional
UPDATE (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several workers, in Orthanc or
on other hosts, never take the same row.

A claim is a lease: its worker renews it while it converts, and a running request whose lease
has passed is claimed again (its worker was killed, or its host went away). The claim is the
worker's name and the attempt number it took; the unit of work that publishes a conversion
first checks that the claim still holds, so a worker whose request was taken over commits
nothing, and each request is published once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nifti_archive.db import rows_changed
from nifti_archive.errors import Conflict
from nifti_archive.models import ACTIVE_REQUESTS, ConversionReason, ConversionRequest, ConversionState, utcnow

log = logging.getLogger(__name__)
# A lease is renewed this many times in its length: one late renewal does not lose it.
RENEWALS_PER_LEASE = 3
# Claims of one request after which a lapsed lease fails it instead of passing it on; a retry
# gives it one more claim each time.
MOST_CLAIMS = 3
# The message of a request claimed from a worker whose lease passed, before that worker's name.
TAKEN_OVER = "claimed again: its lease passed without renewal by "


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one running request: its name and the attempt it took."""

    request_id: int
    worker: str
    attempt: int


class ClaimLost(Conflict):
    """The request's lease passed and another worker claimed it; this conversion must not commit."""


# The claim the current thread converts under. The unit of work that publishes reads it here,
# so that a converter another package registers (DICOM SEG) commits under the same check
# without knowing about claims.
_held: ContextVar[Claim | None] = ContextVar("held_conversion_claim", default=None)

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


def _now(session: Session) -> ColumnElement[datetime] | datetime:
    # Workers on several hosts compare leases by the database server's clock, not by their own
    # (SQLite's database is on one host: that host's clock).
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def claim_next(sessions: sessionmaker[Session], worker: str, lease: timedelta) -> Claim | None:
    """The oldest claimable request (pending, or running under a lease that has passed), now running
    for ``worker`` for ``lease``; None when there is none.

    One statement: on PostgreSQL its subquery skips the rows other workers are claiming this
    instant (SKIP LOCKED), on SQLite the statement holds the database's write lock throughout."""
    with sessions() as session, session.begin():
        now = _now(session)
        lapsed = and_(ConversionRequest.state == ConversionState.RUNNING, ConversionRequest.lease_until < now)
        # A series whose conversion takes its worker down with it would otherwise be taken over,
        # and take the next worker down, for ever.
        session.execute(
            update(ConversionRequest)
            .where(ACTIVE_REQUESTS, lapsed, ConversionRequest.attempts >= MOST_CLAIMS)
            .values(state=ConversionState.FAILED, updated_at=utcnow(),
                    message=f"claimed {MOST_CLAIMS} times or more, and its worker stopped while converting it "
                            "again (does the series take its converter down?); nora --retry tries once more")
            .execution_options(synchronize_session=False)
        )
        oldest = (
            select(ConversionRequest.id)
            .where(ACTIVE_REQUESTS, or_(ConversionRequest.state == ConversionState.PENDING, lapsed))
            .order_by(ConversionRequest.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        claimed = session.execute(
            update(ConversionRequest)
            .where(ConversionRequest.id == oldest)
            .values(
                state=ConversionState.RUNNING,
                worker=worker,
                attempts=ConversionRequest.attempts + 1,
                lease_until=now + lease,
                updated_at=utcnow(),
                # SET reads the row as it was: a running one was a dead worker's.
                message=case(
                    (ConversionRequest.state == ConversionState.RUNNING, TAKEN_OVER + ConversionRequest.worker),
                    else_=ConversionRequest.message,
                ),
            )
            .returning(ConversionRequest.id, ConversionRequest.attempts, ConversionRequest.message)
            .execution_options(synchronize_session=False)
        ).first()
    if claimed is None:
        return None
    if claimed.message.startswith(TAKEN_OVER):
        log.warning("conversion request %d: %s; %s takes it over", claimed.id, claimed.message, worker)
    return Claim(claimed.id, worker, claimed.attempts)


def _holds(claim: Claim) -> ColumnElement[bool]:
    return and_(
        ConversionRequest.id == claim.request_id,
        ConversionRequest.state == ConversionState.RUNNING,
        ConversionRequest.worker == claim.worker,
        ConversionRequest.attempts == claim.attempt,
    )


def confirm_claim(session: Session, request_id: int) -> None:
    """ClaimLost unless the claim the thread converts ``request_id`` under still holds. Run first
    in the unit of work that publishes: the row stays locked until its commit, so the claim can
    no longer be taken over meanwhile. Nothing to check where no claim is held (a direct call)."""
    claim = _held.get()
    if claim is None or claim.request_id != request_id:
        return
    if not rows_changed(session.execute(update(ConversionRequest).where(_holds(claim)).values(updated_at=utcnow()))):
        raise ClaimLost(f"conversion request {request_id} was taken over by another worker after {claim.worker}'s claim "
                        "lapsed; its result is not published twice")


@contextmanager
def holding(sessions: sessionmaker[Session], claim: Claim, lease: timedelta) -> Iterator[None]:
    """Convert under ``claim``: its lease is renewed in the background until the block ends."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease.total_seconds() / RENEWALS_PER_LEASE):
            try:
                with sessions() as session, session.begin():
                    renewed = rows_changed(session.execute(
                        update(ConversionRequest).where(_holds(claim)).values(lease_until=_now(session) + lease)
                    ))
            except SQLAlchemyError as exc:  # the database may be back before the lease passes
                log.warning("could not renew the claim on conversion request %d: %s", claim.request_id, exc)
                continue
            if not renewed:
                return  # taken over (or finished): the commit's check decides
    renewer = threading.Thread(target=renew, name=f"lease-{claim.request_id}", daemon=True)
    renewer.start()
    token = _held.set(claim)
    try:
        yield
    finally:
        _held.reset(token)
        done.set()
        renewer.join()


def finish(
    session: Session, request_id: int, state: ConversionState, message: str = "", target: str = "", waiting_for: str = ""
) -> None:
    confirm_claim(session, request_id)
    session.execute(
        update(ConversionRequest)
        .where(ConversionRequest.id == request_id)
        .values(state=state, message=message, target=target, waiting_for=waiting_for, updated_at=utcnow())
    )


def give_back(session: Session, request_id: int, message: str) -> None:
    """A claimed request back to pending, for any worker: its conversion could not start here (so
    the claim does not count towards MOST_CLAIMS)."""
    confirm_claim(session, request_id)
    session.execute(
        update(ConversionRequest)
        .where(ConversionRequest.id == request_id)
        .values(state=ConversionState.PENDING, message=message, lease_until=None, updated_at=utcnow(),
                attempts=ConversionRequest.attempts - 1)
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
            .values(state=ConversionState.PENDING, message="resumed after a restart", lease_until=None, updated_at=utcnow())
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
