"""Workers claiming conversion requests from the durable queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.models import ConversionReason


def test_a_worker_whose_claim_is_taken_claims_the_next_request(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        for n in (1, 2):
            conversion_queue.enqueue(session, f"series-{n}", f"hash-{n}", 1, f"1.2.{n}", ConversionReason.SENT)
    rival: list[int | None] = []

    def rival_claims_first(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Another worker claims between this worker's read of the oldest request and its update.
        if statement.lstrip().upper().startswith("UPDATE") and not rival:
            rival.append(None)
            rival[0] = conversion_queue.claim_next(archive.sessions, "rival")

    event.listen(archive.engine, "before_cursor_execute", rival_claims_first)
    try:
        mine = conversion_queue.claim_next(archive.sessions, "me")
    finally:
        event.remove(archive.engine, "before_cursor_execute", rival_claims_first)
    assert mine is not None and rival[0] is not None
    assert mine != rival[0]
    with archive.sessions() as session:
        assert conversion_queue.counts(session) == {"running": 2}
