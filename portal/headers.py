"""Response headers that keep users' files and pages from scripting the portal's origin.

Pages: a Content-Security-Policy that runs only our own script files (no inline script, no
event-handler attributes) and lets no other site frame them. Users' files: a short list of
types a browser may show inline and cannot execute; everything else is an
``application/octet-stream`` attachment, and the file answer carries a sandboxing policy of
its own, so an uploaded ``qc.html`` or scripted SVG is a download, never a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# What every page of the portal keeps, OHIF's included: nothing from another origin, no plugins, no framing.
_SHARED_DIRECTIVES = (
    "default-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self' data: blob:",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
# NiiVue compiles a WebAssembly decoder for some formats ('wasm-unsafe-eval' allows that, not
# eval or inline script), draws its font atlas from a data: image and reads volumes as blobs.
PAGE_POLICY = "; ".join(("script-src 'self' 'wasm-unsafe-eval'", "style-src 'self'", *_SHARED_DIRECTIVES))
# OHIF (/ohif/ only, portal/pages/ohif.py) is a prebuilt bundle that needs more: its libraries
# inject <style> elements and style attributes, and loading a SEG compiles functions at run time
# (ndarray's constructors: 'unsafe-eval'); its capture tool and decoders use data: and blob: URLs.
# It still loads nothing from another origin and runs no inline script.
OHIF_POLICY = "; ".join((
    "script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'", "style-src 'self' 'unsafe-inline'", "font-src 'self' data:",
    *_SHARED_DIRECTIVES,
))
# A user's file, even one shown inline, runs nothing and loads nothing.
FILE_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"
BINARY = "application/octet-stream"
# Types a browser shows without running anything; by the file's last suffix, lower case.
INLINE_TYPES = {
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

OHIF_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": OHIF_POLICY}


@dataclass(frozen=True)
class FileDelivery:
    mimetype: str
    as_attachment: bool


def delivery(path: str) -> FileDelivery:
    """How a user's file is sent: inline only for the safe types, else a binary attachment."""
    inline = INLINE_TYPES.get(PurePosixPath(path).suffix.lower())
    return FileDelivery(inline, False) if inline else FileDelivery(BINARY, True)
