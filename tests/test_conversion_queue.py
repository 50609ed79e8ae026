"""Workers claiming conversion requests from the durable queue."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState
from tests.polling import wait_until

LEASE = timedelta(seconds=60)


def test_a_worker_whose_claim_is_taken_claims_the_next_request(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        for n in (1, 2):
            conversion_queue.enqueue(session, f"series-{n}", f"hash-{n}", 1, f"1.2.{n}", ConversionReason.SENT)
    rival: list[conversion_queue.Claim | None] = []

    def rival_claims_first(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Another worker claims just before this worker's claim runs: this one takes the next request.
        if statement.lstrip().upper().startswith("UPDATE") and not rival:
            rival.append(None)
            rival[0] = conversion_queue.claim_next(archive.sessions, "rival", LEASE)

    event.listen(archive.engine, "before_cursor_execute", rival_claims_first)
    try:
        mine = conversion_queue.claim_next(archive.sessions, "me", LEASE)
    finally:
        event.remove(archive.engine, "before_cursor_execute", rival_claims_first)
    assert mine is not None and rival[0] is not None
    assert mine != rival[0]
    with archive.sessions() as session:
        assert conversion_queue.counts(session) == {"running": 2}


def lease_of(archive: Archive, request_id: int) -> datetime | None:
    with archive.sessions() as session:
        return session.get_one(ConversionRequest, request_id).lease_until


def test_a_lapsed_claim_is_taken_over_and_its_worker_cannot_publish(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.enqueue(session, "series-1", "hash-1", 1, "1.2.1", ConversionReason.SENT)
    dead = conversion_queue.claim_next(archive.sessions, "dead", timedelta(0))
    assert dead is not None
    alive = conversion_queue.claim_next(archive.sessions, "alive", LEASE)
    assert alive is not None and (alive.request_id, alive.attempt) == (dead.request_id, 2)
    assert conversion_queue.claim_next(archive.sessions, "third", LEASE) is None  # a live lease is not taken
    with conversion_queue.holding(archive.sessions, dead, LEASE), pytest.raises(conversion_queue.ClaimLost):
        with archive.unit_of_work() as (session, _journal):
            conversion_queue.finish(session, dead.request_id, ConversionState.DONE, target="dead's")
    with conversion_queue.holding(archive.sessions, alive, LEASE), archive.unit_of_work() as (session, _journal):
        conversion_queue.finish(session, alive.request_id, ConversionState.DONE, target="alive's")
    with archive.sessions() as session:
        request = session.get_one(ConversionRequest, alive.request_id)
        assert (request.state, request.target, request.worker) == (ConversionState.DONE, "alive's", "alive")


def test_a_worker_renews_its_claim_while_it_converts(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.enqueue(session, "series-1", "hash-1", 1, "1.2.1", ConversionReason.SENT)
    short = timedelta(seconds=0.6)
    claim = conversion_queue.claim_next(archive.sessions, "busy", short)
    assert claim is not None
    first = lease_of(archive, claim.request_id)
    assert first is not None
    with conversion_queue.holding(archive.sessions, claim, short):
        # Renewed after the lease it was claimed with had passed, and still its own.
        wait_until(lambda: (lease_of(archive, claim.request_id) or first) > first + short, 10, "the lease to be renewed")
        assert conversion_queue.claim_next(archive.sessions, "rival", LEASE) is None


def test_a_request_whose_workers_keep_dying_fails_until_retried(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.enqueue(session, "series-1", "hash-1", 1, "1.2.1", ConversionReason.SENT)
    for attempt in range(1, conversion_queue.MOST_CLAIMS + 1):
        died = conversion_queue.claim_next(archive.sessions, f"dies-{attempt}", timedelta(0))
        assert died is not None and died.attempt == attempt
    assert conversion_queue.claim_next(archive.sessions, "next", LEASE) is None
    with archive.sessions() as session:
        request = session.get_one(ConversionRequest, died.request_id)
        assert request.state is ConversionState.FAILED
        assert f"claimed {conversion_queue.MOST_CLAIMS} times or more" in request.message
    with archive.unit_of_work() as (session, _journal):
        assert conversion_queue.retry(session) == 1
    again = conversion_queue.claim_next(archive.sessions, "after retry", LEASE)
    assert again is not None and (again.request_id, again.attempt) == (died.request_id, conversion_queue.MOST_CLAIMS + 1)


def test_a_request_given_back_unstarted_does_not_count_its_claim(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.enqueue(session, "series-1", "hash-1", 1, "1.2.1", ConversionReason.SENT)
    for _ in range(conversion_queue.MOST_CLAIMS + 1):
        claim = conversion_queue.claim_next(archive.sessions, "cut off", LEASE)
        assert claim is not None and claim.attempt == 1
        with conversion_queue.holding(archive.sessions, claim, LEASE), archive.unit_of_work() as (session, _journal):
            conversion_queue.give_back(session, claim.request_id, "cannot reach Orthanc")
    with archive.sessions() as session:
        request = session.get_one(ConversionRequest, claim.request_id)
        assert (request.state, request.attempts) == (ConversionState.PENDING, 0)
