"""What each user has clicked so far on an image, until they reset it or go quiet.

Interactive tools refine a proposal: every request adds to the clicks before it. The portal names
the session (its user and its own session), so two users on one image never see each other's clicks.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from segmentation.interactive.interactions import Interaction

# Clicks are forgotten after an hour without a new one, and the oldest sessions go first beyond this
# many, so that an assistant left running does not grow.
LIFETIME_SECONDS = 3600.0
CAPACITY = 512

MemoryKey = tuple[str, str, str]


class ClickMemory:
    def __init__(self, lifetime_seconds: float = LIFETIME_SECONDS, capacity: int = CAPACITY) -> None:
        self._lifetime = lifetime_seconds
        self._capacity = capacity
        self._entries: OrderedDict[MemoryKey, tuple[float, Interaction]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: str, image: str, tool: str, newer: Interaction) -> Interaction:
        """The session's clicks on this image with this tool, ``newer`` included."""
        now = time.monotonic()
        key = (session, image, tool)
        with self._lock:
            self._forget_stale(now)
            _, earlier = self._entries.pop(key, (now, None))
            merged = earlier.merged(newer) if earlier is not None else newer
            self._entries[key] = (now, merged)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
            return merged

    def reset(self, session: str, image: str) -> int:
        """Forget the session's clicks on this image, with every tool; how many tools had some."""
        with self._lock:
            keys = [key for key in self._entries if key[:2] == (session, image)]
            for key in keys:
                del self._entries[key]
            return len(keys)

    def _forget_stale(self, now: float) -> None:
        while self._entries:
            key, (touched, _) = next(iter(self._entries.items()))
            if now - touched <= self._lifetime:
                return
            del self._entries[key]
