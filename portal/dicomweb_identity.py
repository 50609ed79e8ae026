"""What a caller who may not see identities gets of a pseudonymised project's DICOM, as DICOM JSON
and as Part-10 objects: the patient is the subject's pseudonym, and the attributes that name or
locate the patient, the hospital or its staff are emptied or gone.

UIDs stay: they address every DICOMweb resource (a viewer could not load a study without them),
and they are what the archive's own listings show to viewers already. Pixel data, dates other than
the birth date, sex, age and the acquisition stay too: they are the research data. Private
attributes are kept (scanners' geometry lives there); they are not searched for names.
"""

from __future__ import annotations

import fnmatch
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag

# Replaced by the subject's pseudonym (a pseudonymised project's subject id is the pseudonym).
PSEUDONYMISED = ("PatientName", "PatientID")
# Type 2 in their modules (present, possibly empty): emptied, so the objects stay valid.
EMPTIED = ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID")
# Optional attributes that name or locate the patient, the hospital or its staff, or hold ids a
# hospital can look up: removed, sequences whole (a sequence of original values among them).
REMOVED = (
    "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthTime", "PatientBirthName", "PatientMotherBirthName", "PatientAddress",
    "PatientTelephoneNumbers", "CountryOfResidence", "RegionOfResidence", "MilitaryRank", "BranchOfService",
    "MedicalRecordLocator", "Occupation", "PatientComments", "AdditionalPatientHistory", "ResponsiblePerson",
    "PatientInsurancePlanCodeSequence", "ReferencedPatientSequence", "IssuerOfAccessionNumberSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "OperatorsName", "RequestingPhysician", "AdmissionID",
    "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID", "RequestAttributesSequence",
    "OriginalAttributesSequence",
)
# What a bulk data URI may name for such a caller: binary values (pixels, overlays, icons), never text.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    found = {keyword: tag_for_keyword(keyword) for keyword in keywords}
    unknown = sorted(keyword for keyword, tag in found.items() if tag is None)
    assert not unknown, f"not DICOM keywords: {unknown}"
    return frozenset(tag for tag in found.values() if tag is not None)


PSEUDONYMISED_TAGS = _tags(PSEUDONYMISED)
EMPTIED_TAGS = _tags(EMPTIED)
REMOVED_TAGS = _tags(REMOVED)
IDENTIFYING_TAGS = PSEUDONYMISED_TAGS | EMPTIED_TAGS | REMOVED_TAGS


def json_key(tag: int) -> str:
    """A tag as DICOM JSON writes it: eight upper-case hex digits."""
    return f"{tag:08X}"


def pseudonymise_json(dataset: dict[str, Any], pseudonym: str) -> None:
    """Rewrite one DICOM JSON dataset in place, its sequences' items included."""
    for key in list(dataset):
        element = dataset[key]
        tag = int(key, 16)
        if tag in PSEUDONYMISED_TAGS:
            vr = element.get("vr", "LO")
            dataset[key] = {"vr": vr, "Value": [{"Alphabetic": pseudonym} if vr == "PN" else pseudonym]}
        elif tag in EMPTIED_TAGS:
            dataset[key] = {"vr": element.get("vr", "UN")}
        elif tag in REMOVED_TAGS:
            del dataset[key]
        elif element.get("vr") == "SQ":
            for item in element.get("Value", []):
                pseudonymise_json(item, pseudonym)


def _is_sequence(dataset: Dataset, tag: BaseTag) -> bool:
    """Whether an element is a sequence, read from its header alone: converting every element of a
    dataset to find out would cost more than all the rest of the rewriting."""
    vr = dataset.get_item(tag).VR
    if vr is None:  # implicit VR: the dictionary's, for the attributes it knows
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return False
    return bool(vr == "SQ")


def _pseudonymise_dataset(dataset: Dataset, pseudonym: str) -> None:
    for tag in list(dataset.keys()):
        if tag in PSEUDONYMISED_TAGS:
            dataset[tag].value = pseudonym
        elif tag in EMPTIED_TAGS:
            dataset[tag].value = ""
        elif tag in REMOVED_TAGS:
            del dataset[tag]
        elif _is_sequence(dataset, tag):
            for item in dataset[tag].value:
                _pseudonymise_dataset(item, pseudonym)


def pseudonymise_part10(data: bytes, pseudonym: str) -> bytes:
    """A Part-10 object rewritten, in its own transfer syntax (pixel data untouched)."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    _pseudonymise_dataset(dataset, pseudonym)
    written = io.BytesIO()
    dataset.save_as(written, enforce_file_format=True)
    return written.getvalue()


def matches_once_pseudonymised(tag: int, pattern: str, pseudonym: str) -> bool:
    """Whether a QIDO match key on an identifying attribute matches a rewritten result: the
    pseudonym for patient name and id (``*`` and ``?`` wildcards, any case), nothing but the
    universal match for the emptied and removed ones. Matching Orthanc's original values instead
    would let a search for a name tell which pseudonym it belongs to."""
    if tag in PSEUDONYMISED_TAGS:
        return fnmatch.fnmatchcase(pseudonym.lower(), pattern.lower().replace("[", "[[]"))
    return pattern.strip("*") == ""


def bulk_path_allowed(path: str) -> bool:
    """Whether a bulk data path (tags and item numbers, ``/``-separated) names a binary value of a
    public attribute, outside the identifying ones: a text value would bypass the rewriting."""
    tags = [part for part in path.split("/") if not part.isdigit()]
    if not tags or not all(re.fullmatch(r"[0-9A-Fa-f]{8}", tag) for tag in tags):
        return False
    numbers = [int(tag, 16) for tag in tags]
    # Odd groups are private: their meaning, and whether they hold a name, is the vendor's.
    if any(number in IDENTIFYING_TAGS or (number >> 16) % 2 for number in numbers):
        return False
    try:
        vrs = dictionary_VR(numbers[-1]).split(" or ")
    except KeyError:
        return False
    return all(vr in BINARY_VRS for vr in vrs)


def restore_identity(dataset: Dataset, original: Mapping[str, str]) -> None:
    """Give an object stored into a study the study's own patient and study identifiers
    (``original``, by keyword, as Orthanc holds them): one written from pseudonymised metadata
    would otherwise make Orthanc file it under a second patient named by the pseudonym."""
    for keyword in (*PSEUDONYMISED, *EMPTIED):
        setattr(dataset, keyword, original.get(keyword, ""))
