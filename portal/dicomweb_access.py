"""Who sees which study over DICOMweb, how a QIDO search is asked of Orthanc and paged, and what
STOW-RS takes: plain decisions on rows the blueprint reads (``portal.api.dicomweb``).

A study is visible where its StudyInstanceUID is a live study of a project the caller holds a
role on; one UID may be in several projects, and the caller sees the real identifiers where any
of them shows them (``may_see_identity``), else the pseudonym of that project's subject.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

from nifti_archive.models import Project, Role
from portal.access import may_see_identity
from portal.dicomweb_identity import IDENTIFYING_TAGS, json_key, matches_once_pseudonymised, pseudonymise_json

STUDY_UID_KEY = json_key(0x0020000D)
# StudyInstanceUIDs a search names to Orthanc at most (a UID is up to 64 characters): beyond
# that the URL grows past what Orthanc's HTTP server takes, and the results are filtered here.
UID_LIST_MAX = 100
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# What STOW-RS takes: segmentations and reports drawn on the archive's images, never images.
SEG_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4": "Segmentation"}
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
}
STORABLE_CLASSES = {**SEG_CLASSES, **SR_CLASSES}


class QueryError(ValueError):
    """A QIDO query this endpoint cannot answer; the message says which parameter."""


@dataclass(frozen=True)
class StudyGrant:
    """A live study in a project where the caller holds ``role``; ``subject`` and ``study`` are its
    folders (the subject's is the pseudonym in a pseudonymised project)."""

    study_uid: str
    project: Project
    subject: str
    study: str
    role: Role


@dataclass(frozen=True)
class StudyView:
    """How the caller sees one study: with its identifiers, or with ``pseudonym`` in their place."""

    uid: str
    identity: bool
    pseudonym: str = ""


def study_views(grants: Iterable[StudyGrant]) -> dict[str, StudyView]:
    by_uid: dict[str, list[StudyGrant]] = {}
    for grant in grants:
        by_uid.setdefault(grant.study_uid, []).append(grant)
    views = {}
    for uid, held in by_uid.items():
        if any(may_see_identity(grant.project, grant.role) for grant in held):
            views[uid] = StudyView(uid, True)
        else:
            first = min(held, key=lambda grant: grant.project.id)
            views[uid] = StudyView(uid, False, first.subject)
    return views


def strongest(grants: Iterable[StudyGrant]) -> StudyGrant | None:
    """The grant with the highest role (the project a study is acted on in); None without any."""
    return max(grants, key=lambda grant: (grant.role.rank, -grant.project.id), default=None)


def show(dataset: dict[str, Any], view: StudyView) -> dict[str, Any]:
    """A DICOM JSON dataset as the caller may see it (rewritten in place where it must be)."""
    if not view.identity:
        pseudonymise_json(dataset, view.pseudonym)
    return dataset


@dataclass(frozen=True)
class MatchKey:
    name: str
    tag: int
    value: str


@dataclass(frozen=True)
class QidoQuery:
    """A QIDO-RS query split up: parameters passed on as they came, the StudyInstanceUID match
    (a set), match keys on identifying attributes, and the paging."""

    params: tuple[tuple[str, str], ...] = ()
    identifying: tuple[MatchKey, ...] = ()
    study_uids: frozenset[str] | None = None
    limit: int | None = None
    offset: int = 0


def _tag(name: str) -> int | None:
    if _HEX_TAG.fullmatch(name):
        return int(name, 16)
    return tag_for_keyword(name)


def _whole_number(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise QueryError(f"{name} must be a whole number, not {value[:40]!r}")
    return int(value)


def parse_query(args: Iterable[tuple[str, str]]) -> QidoQuery:
    params: list[tuple[str, str]] = []
    identifying: list[MatchKey] = []
    study_uids: frozenset[str] | None = None
    limit, offset = None, 0
    for name, value in args:
        # A key may name an attribute inside a sequence (``Seq.Attr``): identifying if any part is.
        tags = [_tag(part) for part in name.split(".")]
        if name == "limit":
            limit = _whole_number(name, value)
        elif name == "offset":
            offset = _whole_number(name, value)
        elif tags == [0x0020000D]:
            named = frozenset(uid for uid in re.split(r"[,\\]", value) if uid)
            study_uids = named if study_uids is None else study_uids & named
        elif any(tag in IDENTIFYING_TAGS for tag in tags):
            identifying.append(MatchKey(name, tags[-1] or 0, value))
        else:
            params.append((name, value))
    return QidoQuery(tuple(params), tuple(identifying), study_uids, limit, offset)


@dataclass(frozen=True)
class OrthancSearch:
    """One search sent to Orthanc and what to keep of its results: those of ``studies`` (by the
    study UID each carries, or all when the URL names the one study), matched here on
    ``local_matches`` once rewritten."""

    params: tuple[tuple[str, str], ...]
    studies: Mapping[str, StudyView]
    local_matches: tuple[MatchKey, ...] = ()
    scoped_to: StudyView | None = None


@dataclass(frozen=True)
class QidoPlan:
    searches: tuple[OrthancSearch, ...]
    # Whether Orthanc pages (limit and offset passed on) or the results are paged here.
    page_here: bool
    limit: int | None
    offset: int


def plan_search(query: QidoQuery, views: Mapping[str, StudyView], scoped_to: StudyView | None = None) -> QidoPlan:
    """How to answer a search: over every visible study (``views``), or within the one study the
    URL names (``scoped_to``, whose search Orthanc limits itself).

    Studies whose identifiers the caller may see are searched by Orthanc on every key; in the
    others a key on an identifying attribute is matched here against the pseudonymised results,
    never by Orthanc against the real values. Orthanc pages only a single search that names all
    its studies (or is scoped) and needs no matching here; otherwise everything is fetched,
    filtered and paged here, so ``limit`` and ``offset`` count visible results either way.
    """
    visible = dict(views) if scoped_to else {uid: v for uid, v in views.items() if query.study_uids is None or uid in query.study_uids}
    groups: list[tuple[dict[str, StudyView], bool]] = []
    if query.identifying:
        groups.append(({uid: v for uid, v in visible.items() if v.identity}, True))
        groups.append(({uid: v for uid, v in visible.items() if not v.identity}, False))
    else:
        groups.append((visible, True))
    searches = []
    for studies, by_orthanc in groups:
        if not studies:
            continue
        params = list(query.params)
        if by_orthanc:
            params += [(key.name, key.value) for key in query.identifying]
        if not scoped_to:
            params.append(("includefield", STUDY_UID_KEY))
            if len(studies) <= UID_LIST_MAX:
                params.append(("StudyInstanceUID", ",".join(sorted(studies))))
        local = () if by_orthanc else query.identifying
        searches.append(OrthancSearch(tuple(params), studies, local, scoped_to))
    named_all = scoped_to is not None or all(len(search.studies) <= UID_LIST_MAX for search in searches)
    page_here = len(searches) > 1 or not named_all or any(search.local_matches for search in searches)
    if not page_here and searches:
        paging = [("offset", str(query.offset))] + ([("limit", str(query.limit))] if query.limit is not None else [])
        searches = [OrthancSearch(searches[0].params + tuple(paging), searches[0].studies, (), scoped_to)]
    return QidoPlan(tuple(searches), page_here, query.limit, query.offset)


def _study_of(result: dict[str, Any]) -> str:
    values = result.get(STUDY_UID_KEY, {}).get("Value", [])
    return str(values[0]) if values else ""


def results(plan: QidoPlan, answers: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The visible results of the plan's searches, rewritten for the caller, and paged."""
    kept = []
    for search, answer in zip(plan.searches, answers, strict=True):
        for result in answer:
            view = search.scoped_to or search.studies.get(_study_of(result))
            if view is None or view.uid not in search.studies:
                continue
            if not all(matches_once_pseudonymised(key.tag, key.value, view.pseudonym) for key in search.local_matches):
                continue
            kept.append(show(result, view))
    if not plan.page_here:
        return kept
    end = None if plan.limit is None else plan.offset + plan.limit
    return kept[plan.offset : end]


@dataclass(frozen=True)
class StowObject:
    """What STOW-RS checks of one object before anything is stored."""

    sop_class: str
    sop_instance: str
    study_uid: str
    series_uid: str
    source_series: tuple[str, ...]


def _series_references(dataset: Dataset) -> list[str]:
    """The series an object names as its source: a SEG's ReferencedSeriesSequence, an SR's evidence."""
    found = [str(item.get("SeriesInstanceUID", "")) for item in dataset.get("ReferencedSeriesSequence", [])]
    for evidence in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in dataset.get(evidence, []):
            found += [str(item.get("SeriesInstanceUID", "")) for item in study.get("ReferencedSeriesSequence", [])]
    return found


def stow_object(dataset: Dataset) -> StowObject:
    sources = tuple(dict.fromkeys(uid for uid in _series_references(dataset) if uid))
    def text(keyword: str) -> str:
        return str(dataset.get(keyword, ""))

    return StowObject(text("SOPClassUID"), text("SOPInstanceUID"), text("StudyInstanceUID"), text("SeriesInstanceUID"), sources)


def stow_refusal(stowed: StowObject, url_study: str | None, project_series: set[str]) -> str | None:
    """Why STOW-RS does not take the object into its (visible, editable) study; None if it does.
    ``project_series``: the source series among its references that are in the study's project."""
    if stowed.sop_class not in STORABLE_CLASSES:
        return (f"SOP class {stowed.sop_class or '(none)'} is not taken over STOW-RS: only DICOM SEG and SR objects drawn on "
                "the archive's images (images come in by C-STORE or nora --import)")
    if url_study is not None and stowed.study_uid != url_study:
        return f"the object belongs to study {stowed.study_uid}, not to the study the URL names"
    if not stowed.source_series:
        return "the object names no source series (ReferencedSeriesSequence): which of the project's images it belongs to is unknown"
    outside = [uid for uid in stowed.source_series if uid not in project_series]
    if outside:
        return f"its source series {outside[0]} is not in the archive of the study's project"
    return None
