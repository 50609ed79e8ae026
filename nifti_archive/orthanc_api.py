"""What the archive needs from Orthanc, over any transport.

Inside Orthanc the plugin answers through its in-process API; anywhere else (the command
line, a worker on another host, the tests) ``OrthancRest`` talks HTTP with credentials.
Both give the same two primitives, and everything else is built on them here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import IO, Any, Protocol

from nifti_archive.errors import ArchiveError
from nifti_archive.ingest.routing import Origin
from nifti_archive.settings import Settings

# A proxied body travels in pieces of this size: a whole study never sits in memory.
STREAM_CHUNK = 1024 * 1024


class OrthancUnavailable(ArchiveError):
    """Orthanc refused a call (``status`` is its HTTP status) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class OrthancApi(Protocol):
    def get(self, uri: str) -> bytes:
        """The body of a GET on Orthanc's REST API; OrthancUnavailable (404: an unknown resource) otherwise."""

    def dicom(self, instance_id: str) -> bytes:
        """An instance's DICOM file as it was received."""


@dataclass(frozen=True)
class SeriesInfo:
    orthanc_id: str
    instance_ids: tuple[str, ...]
    tags: dict[str, str]
    status: str
    expected_instances: int | None
    called_aet: str
    # Who sent the instances (calling AET and address); empty for instances uploaded over REST.
    origins: frozenset[Origin] = frozenset()
    # Every distinct source, uploads over REST included (an empty AET).
    sources: frozenset[Origin] = frozenset()

    @property
    def series_uid(self) -> str:
        return self.tags.get("SeriesInstanceUID", "")

    @property
    def instances_hash(self) -> str:
        return instances_hash(self.instance_ids)

    @property
    def modality(self) -> str:
        return self.tags.get("Modality", "")

    @property
    def incomplete_reason(self) -> str | None:
        """Why Orthanc thinks instances are missing, where the modality told it how many to expect."""
        if self.status in ("Missing", "Incomplete"):
            expected = f" of {self.expected_instances}" if self.expected_instances else ""
            return f"Orthanc reports the series {self.status.lower()}: {len(self.instance_ids)}{expected} instances"
        return None

    @property
    def mixed_sources_reason(self) -> str | None:
        """Instances of one series from several senders: whoever knows a series' UID could otherwise
        replace a project's published volume by sending one instance from elsewhere."""
        if len(self.sources) <= 1:
            return None
        names = sorted(f"{source.aet}@{source.host}" if source.aet else "an upload over REST" for source in self.sources)
        return f"the series' instances came from {len(names)} different senders ({', '.join(names)})"


def instances_hash(instance_ids: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(instance_ids)).encode()).hexdigest()


def get_json(api: OrthancApi, uri: str) -> Any:
    return json.loads(api.get(uri))


def _flat_tags(simplified: dict[str, Any]) -> dict[str, str]:
    """Text-valued tags only: sequences and binary values are of no use for names or routing."""
    return {key: str(value) for key, value in simplified.items() if isinstance(value, (str, int, float))}


def _metadata(api: OrthancApi, instance_id: str, name: str) -> str:
    try:
        return api.get(f"/instances/{instance_id}/metadata/{name}").decode().strip()
    except OrthancUnavailable as exc:  # instances uploaded over REST have no called or calling AET
        if exc.status != 404:
            raise
        return ""


def series_info(api: OrthancApi, series_id: str) -> SeriesInfo:
    series = get_json(api, f"/series/{series_id}")
    instances = tuple(sorted(series["Instances"]))
    first = instances[0]
    tags = _flat_tags(get_json(api, f"/instances/{first}/simplified-tags"))
    called_aet = _metadata(api, first, "CalledAET")
    expected = series.get("ExpectedNumberOfInstances")
    senders = [(_metadata(api, instance, "RemoteAET"), _metadata(api, instance, "RemoteIP")) for instance in instances]
    sources = frozenset(Origin(aet, host) for aet, host in senders)
    return SeriesInfo(
        orthanc_id=series_id,
        instance_ids=instances,
        tags=tags,
        status=str(series.get("Status", "Unknown")),
        expected_instances=int(expected) if expected else None,
        called_aet=called_aet,
        origins=frozenset(source for source in sources if source.aet),
        sources=sources,
    )


def list_series(api: OrthancApi) -> list[str]:
    return list(get_json(api, "/series"))


@dataclass
class OrthancAnswer:
    """An answer of Orthanc's, whatever its status, read as it arrives; close it when done."""

    status: int
    headers: Message
    body: IO[bytes]

    def chunks(self, size: int = STREAM_CHUNK) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes; closes the answer at the end."""
        try:
            while block := self.body.read(size):
                yield block
        finally:
            self.close()

    def read(self) -> bytes:
        try:
            return bytes(self.body.read())
        finally:
            self.close()

    def close(self) -> None:
        self.body.close()


@dataclass
class OrthancRest:
    url: str
    username: str
    password: str
    timeout: float = 60.0
    _auth: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def _request(self, method: str, uri: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        request = urllib.request.Request(self.url + uri, data=body, method=method)
        request.add_header("Authorization", self._auth)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise OrthancUnavailable(f"Orthanc answered {exc.code} to {method} {uri}: {detail}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OrthancUnavailable(f"cannot reach Orthanc at {self.url}: {reason}") from exc

    def get(self, uri: str) -> bytes:
        return self._request("GET", uri)

    def stream(self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None = None) -> OrthancAnswer:
        """A call whose answer, an error status included, is the caller's to read in pieces (a proxy's
        call); OrthancUnavailable only when Orthanc cannot be reached."""
        request = urllib.request.Request(self.url + uri, data=body, method=method, headers={**headers, "Authorization": self._auth})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            return OrthancAnswer(exc.code, exc.headers, exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OrthancUnavailable(f"cannot reach Orthanc at {self.url}: {reason}") from exc
        return OrthancAnswer(response.status, response.headers, response)

    def dicom(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")

    def post(self, uri: str, body: bytes, content_type: str = "application/json") -> Any:
        return json.loads(self._request("POST", uri, body, content_type) or b"null")

    def put(self, uri: str, document: dict[str, Any]) -> Any:
        return json.loads(self._request("PUT", uri, json.dumps(document).encode(), "application/json") or b"null")

    def delete(self, uri: str) -> None:
        self._request("DELETE", uri)

    def store(self, dicom: bytes) -> dict[str, Any]:
        """Upload one DICOM file; Orthanc answers with its ids (and Status AlreadyStored for a repeat)."""
        answer = self.post("/instances", dicom, "application/dicom")
        return dict(answer)


def orthanc_for(settings: Settings) -> OrthancRest:
    """Orthanc's REST API with Northanc's own credentials."""
    return OrthancRest(settings.orthanc_url, *settings.orthanc_credentials())
