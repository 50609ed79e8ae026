"""Stable pseudonyms: a keyed HMAC of the patient id, so the same patient always gets the
same subject id in an installation, and nobody without the key can go back or test guesses."""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "sub-"
LENGTH = 12


def keyed_hash(secret: bytes, text: str, length: int) -> str:
    """``length`` lower-case base32 characters of a keyed HMAC of ``text`` (stripped of DICOM's padding)."""
    if len(secret) < 16:
        raise ValueError("the pseudonym key must have at least 16 bytes")
    digest = hmac.new(secret, text.strip().encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:length]


def pseudonym(secret: bytes, patient_id: str) -> str:
    return PREFIX + keyed_hash(secret, patient_id, LENGTH)
