"""Back-off after wrong passwords, counted per account name and per client address.

Each key (``user:<name>``, ``address:<ip>``) may fail a few times freely; every failure after
that blocks the key for a delay that doubles up to a ceiling. A block is temporary and never
a lock: it ends by itself, a site admin clears an account's (``nora --admin user unlock``), and
the log-in check lets a correct password through from an address with no recent failures, so a
stranger guessing a site admin's password cannot keep the site admin out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nifti_archive.models import LoginThrottle, as_utc

# Failures are forgotten after this long without another one.
FAILURE_MEMORY = timedelta(hours=1)
FIRST_DELAY = timedelta(seconds=5)
LONGEST_DELAY = timedelta(minutes=15)
KEY_LENGTH = 160


class KeyKind(Enum):
    USER = "user"
    ADDRESS = "address"


@dataclass(frozen=True)
class Policy:
    """How many failures a key may have before each further one blocks it."""

    free_failures: int


# A shared address (a hospital's NAT) sees many people's typing mistakes; an account sees one person's.
POLICIES = {KeyKind.USER: Policy(free_failures=5), KeyKind.ADDRESS: Policy(free_failures=20)}


def key(kind: KeyKind, value: str) -> str:
    return f"{kind.value}:{value}"[:KEY_LENGTH]


@dataclass(frozen=True)
class KeyState:
    recent_failures: int
    retry_after: timedelta

    @property
    def blocked(self) -> bool:
        return self.retry_after > timedelta(0)


def state(session: Session, name: str, now: datetime) -> KeyState:
    row = session.get(LoginThrottle, name)
    if row is None or row.last_failure_at is None or as_utc(row.last_failure_at) < now - FAILURE_MEMORY:
        return KeyState(0, timedelta(0))
    blocked = as_utc(row.blocked_until) - now if row.blocked_until is not None else timedelta(0)
    return KeyState(row.failures, max(blocked, timedelta(0)))


def delay_after(failures: int, policy: Policy) -> timedelta:
    """The block after the ``failures``-th failure in a row: none while free, then doubling to the ceiling."""
    excess = failures - policy.free_failures
    if excess < 0:
        return timedelta(0)
    return min(FIRST_DELAY * (1 << min(excess, 16)), LONGEST_DELAY)


def record_failure(session: Session, kind: KeyKind, value: str, now: datetime) -> None:
    name = key(kind, value)
    dialect_insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # Two workers may count the first failure of a key at once.
    session.execute(dialect_insert(LoginThrottle).values(key=name, failures=0).on_conflict_do_nothing())
    row = session.scalars(select(LoginThrottle).where(LoginThrottle.key == name).with_for_update()).one()
    stale = row.last_failure_at is None or as_utc(row.last_failure_at) < now - FAILURE_MEMORY
    row.failures = 1 if stale else row.failures + 1
    row.last_failure_at = now
    row.blocked_until = now + delay_after(row.failures, POLICIES[kind])
    session.flush()


def clear(session: Session, kind: KeyKind, value: str) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key(kind, value)))


def forget_old(session: Session, now: datetime) -> None:
    """Drop keys whose failures are forgotten, so made-up user names do not pile up."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < now - FAILURE_MEMORY))
