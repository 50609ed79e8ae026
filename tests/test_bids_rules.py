"""BIDS mapping rules, names and the dataset writer, without servers: the sidecars of the test
data's reference conversions stand in for the archive's series."""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from nifti_archive.bids.dataset import write_dataset, zip_stream
from nifti_archive.bids.export import check_names_kept
from nifti_archive.bids.naming import file_stem, subject_label
from nifti_archive.bids.plan import Plan, SeriesFile, plan_dataset
from nifti_archive.bids.rules import DEFAULT_RULES, SeriesInfo, parse_rules
from nifti_archive.bids.vocabulary import Entity, Suffix
from nifti_archive.errors import InvalidValue
from tests.reference import references


def series(subject: str, study: str, folder: str, sidecar: Mapping[str, Any], image: Path = Path("/dev/null"),
           name: str = "s001.nii.gz", companions: Mapping[str, Path] | None = None) -> SeriesFile:
    return SeriesFile(subject, study, f"{folder}/{name}", image, sidecar, companions or {})


def reference_series(dataset: str, subject: str) -> list[SeriesFile]:
    return [series(subject, "S1", f"{key[1]:03d}_{key[0]}", ref.sidecar, ref.nifti, "s.nii")
            for key, ref in references(dataset).items()]


def plan(items: list[SeriesFile], rules: object = None, pseudonymised: bool = False) -> Plan:
    return plan_dataset("demo", items, parse_rules(None if rules is None else json.dumps(rules)), pseudonymised)


@pytest.mark.parametrize(("rules", "message"), [
    ("{", "BIDS rules: not valid JSON"),
    ([], "BIDS rules: the document: must be an object"),
    ({"rules": [], "extra": 1}, "unknown key 'extra'"),
    ({"rules": {}}, "rules: must be a list"),
    ({"rules": [{"suffix": "T1w"}]}, "rules[0]: names no condition"),
    ({"rules": [{"description": "(", "suffix": "T1w"}]}, "rules[0].description: not a regular expression"),
    ({"rules": [{"description": "x", "suffix": "T1"}]}, "rules[0].suffix: 'T1' is not a suffix"),
    ({"rules": [{"description": "x", "suffix": "T1w", "datatype": "func"}]}, "rules[0].datatype: T1w belongs to anat"),
    ({"rules": [{"description": "x", "suffix": "bold"}]}, "rules[0]: bold needs a task entity"),
    ({"rules": [{"description": "x", "suffix": "epi"}]}, "rules[0]: epi needs a dir entity"),
    ({"rules": [{"description": "x", "suffix": "T1w", "entities": {"task": "a"}}]}, "rules[0]: T1w takes no task entity"),
    ({"rules": [{"description": "x", "suffix": "T1w", "entities": {"sub": "a"}}]}, "rules[0].entities: 'sub' is not an entity"),
    ({"rules": [{"description": "x", "suffix": "T1w", "entities": {"acq": "a_b"}}]}, "rules[0].entities.acq: 'a_b' is not a BIDS label"),
    ({"rules": [{"description": "(?P<subject>x)", "suffix": "T1w"}]}, "rules[0].description: group name 'subject' is not an entity"),
    ({"rules": [{"description": "x", "ignore": True, "suffix": "T1w"}]}, "rules[0]: a rule that ignores series names no suffix"),
    ({"rules": [{"description": "x", "image_type": "M", "suffix": "T1w"}]}, "rules[0].image_type: must be a list"),
    ({"rules": [{"description": "x"}, {"sequence": "EP", "suffix": "dwi", "flag": 1}]}, "rules[0]: needs a \"suffix\""),
    ({"rules": [{"description": "x", "suffix": "T1w"}, {"sequence": "EP", "suffix": "dwi", "flag": 1}]}, "rules[1]: unknown key 'flag'"),
    ({"defaults": "yes"}, "defaults: must be true or false"),
])
def test_malformed_rules_are_refused_naming_the_rule_and_key(rules: object, message: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_rules(rules if isinstance(rules, str) else json.dumps(rules))
    assert message in str(refused.value)


def test_default_rules_map_the_test_data_and_leave_unclear_series_unmapped() -> None:
    assert len(parse_rules(None).rules) == len(DEFAULT_RULES)
    result = plan(reference_series("dcm_qa_nih", "DEV") + reference_series("dcm_qa", "crlab"))
    images = sorted(result.images)
    assert [i for i in images if "fmap" in i] == [
        f"sub-DEV/ses-S1/fmap/sub-DEV_ses-S1_dir-{d}_epi.nii" for d in ("AP", "LR", "PA", "RL")]
    assert [i.rsplit("/", 1)[1] for i in images if "crlab" in i] == [
        "sub-crlab_ses-S1_task-fmri_run-1_bold.nii", "sub-crlab_ses-S1_task-fmri_run-2_bold.nii"]
    assert len(result.unmapped) == 19 and {u.reason for u in result.unmapped} == {"no rule matches"}
    assert result.images["sub-crlab/ses-S1/func/sub-crlab_ses-S1_task-fmri_run-1_bold.nii"].endswith("025_fMRI_MB_asc/s.nii")


@pytest.mark.parametrize(("sidecar", "expected"), [
    ({"SeriesDescription": "t1_mprage_sag", "ImageType": ["ORIGINAL", "PRIMARY", "M"]}, (Suffix.T1W, {})),
    ({"SeriesDescription": "t2_flair_tra"}, (Suffix.FLAIR, {})),
    ({"SeriesDescription": "T2 TSE"}, (Suffix.T2W, {})),
    ({"SeriesDescription": "ep2d_bold_task-nback", "ScanningSequence": "EP"}, (Suffix.BOLD, {Entity.TASK: "nback"})),
    ({"SeriesDescription": "rs_fMRI_SBRef", "ScanningSequence": "EP"}, (Suffix.SBREF, {Entity.TASK: "fmri"})),
    ({"SeriesDescription": "DTI_30dir", "ScanningSequence": "EP"}, (Suffix.DWI, {})),
    ({"SeriesDescription": "gre_field_mapping", "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}, (Suffix.PHASEDIFF, {})),
    ({"ProtocolName": "SE_EPI PE=PA", "ScanningSequence": "EP"}, (Suffix.EPI, {Entity.DIR: "PA"})),
    ({"SeriesDescription": "localizer"}, None),
    ({"SeriesDescription": "EPI PE=AP", "ScanningSequence": "GR"}, None),
])
def test_default_rules_on_common_series(sidecar: dict[str, Any], expected: tuple[Suffix, dict[Entity, str]] | None) -> None:
    found = parse_rules(None).match(SeriesInfo.from_sidecar(sidecar))
    assert (None if found is None else (getattr(found, "suffix", None), dict(getattr(found, "entities", {})))) == expected


def test_project_rules_come_first_and_may_switch_the_defaults_off() -> None:
    t1 = {"SeriesDescription": "t1_mprage", "ScanningSequence": "GR\\IR"}
    rules = {"rules": [{"description": "mprage", "sequence": "IR", "suffix": "T1w", "entities": {"acq": "mprage"}}]}
    found = parse_rules(json.dumps(rules)).match(SeriesInfo.from_sidecar(t1))
    assert getattr(found, "entities", None) == {Entity.ACQ: "mprage"}
    assert parse_rules(json.dumps({**rules, "defaults": False})).match(SeriesInfo.from_sidecar({"SeriesDescription": "t2"})) is None


def test_names_follow_bids_entity_order_and_labels_are_alphanumeric() -> None:
    entities = {Entity.RUN: "2", Entity.TASK: "rest", Entity.ACQ: "mb4", Entity.DIR: "AP"}
    assert file_stem("P01", "base", Suffix.BOLD, entities) == \
        "sub-P01/ses-base/func/sub-P01_ses-base_task-rest_acq-mb4_dir-AP_run-2_bold"
    assert subject_label("sub-abc123") == "abc123" and subject_label("COLL/1") == "COLL1"


def test_subjects_that_would_share_a_label_are_refused_with_both_named() -> None:
    sidecar = {"SeriesDescription": "t1"}
    with pytest.raises(InvalidValue, match="'COLL 1' and 'COLL/1' would both be labelled 'COLL1'"):
        plan([series("COLL/1", "S1", "001_t1", sidecar), series("COLL 1", "S1", "001_t1", sidecar)])


def test_echoes_of_one_series_are_named_not_numbered_as_runs() -> None:
    echoes = [series("P", "S", "005_gre_field_mapping", {"SeriesDescription": "gre_field_mapping", "ImageType": ["M"],
                                                          "EchoNumber": echo}, name=f"s005_e{echo}.nii.gz")
              for echo in (1, 2)]
    bold = [series("P", "S", "007_bold_me", {"SeriesDescription": "bold", "ScanningSequence": "EP", "EchoNumber": echo},
                   name=f"s007_e{echo}.nii.gz") for echo in (1, 2)]
    names = sorted(name.rsplit("/", 1)[1] for name in plan(echoes + bold).images)
    assert names == ["sub-P_ses-S_magnitude1.nii.gz", "sub-P_ses-S_magnitude2.nii.gz",
                     "sub-P_ses-S_task-fmri_echo-1_bold.nii.gz", "sub-P_ses-S_task-fmri_echo-2_bold.nii.gz"]


def test_dwi_without_gradients_is_reported_not_exported(tmp_path: Path) -> None:
    dwi = {"SeriesDescription": "DTI_b1000"}
    gradients = {".bval": tmp_path / "s.bval", ".bvec": tmp_path / "s.bvec"}
    result = plan([series("P", "S", "003_DTI", dwi), series("P", "S", "004_DTI", dwi, companions=gradients)])
    assert [u.reason for u in result.unmapped] == ["dwi needs .bval and .bvec beside the image (default rule 4)"]
    targets = {entry.target for entry in result.entries}
    assert {"sub-P/ses-S/dwi/sub-P_ses-S_dwi.bval", "sub-P/ses-S/dwi/sub-P_ses-S_dwi.bvec"} <= targets


def test_sidecars_lose_identities_and_bold_gets_its_task_name() -> None:
    sidecar = {"SeriesDescription": "fmri", "ScanningSequence": "EP", "PatientName": "Doe^J", "InstitutionName": "Clinic",
               "RepetitionTime": 2.0}
    for pseudonymised, kept in ((False, {"InstitutionName"}), (True, set())):
        result = plan([series("sub-abc", "S", "002_fmri", sidecar)], pseudonymised=pseudonymised)
        (text,) = [e.text for e in result.entries if e.target.endswith("_bold.json")]
        document = json.loads(str(text))
        assert document["TaskName"] == "fmri" and document["RepetitionTime"] == 2.0
        assert "PatientName" not in document and kept == {"InstitutionName"} & document.keys()
    participants = next(e.text for e in result.entries if e.target == "participants.tsv")
    assert participants == "participant_id\nsub-abc\n"


def _image(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"\x1f\x8b not really a NIfTI")
    return path


def test_writer_adds_new_files_and_leaves_the_others_alone(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    first = [series("P", "S1", "002_t1", {"SeriesDescription": "t1"}, _image(archive, "a.nii.gz"))]
    out = tmp_path / "out"
    result = plan(first)
    written = write_dataset(result.entries, out, False, result.report_lines())
    image = out / "sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz"
    assert image.stat().st_ino != (archive / "a.nii.gz").stat().st_ino and written.copied == 1
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    second = first + [series("P", "S2", "002_t1", {"SeriesDescription": "t1"}, _image(archive, "b.nii.gz"))]
    result = plan(second)
    written = write_dataset(result.entries, out, False, result.report_lines())
    assert written.replaced == []
    assert sorted(written.added) == ["sourcedata/northanc/files.tsv", "sub-P/ses-S2/anat/sub-P_ses-S2_T1w.json",
                                     "sub-P/ses-S2/anat/sub-P_ses-S2_T1w.nii.gz", "sub-P/sub-P_sessions.tsv"]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before}
    assert {p: v for p, v in after.items() if not p.name.endswith(".tsv")} == \
        {p: v for p, v in before.items() if not p.name.endswith(".tsv")}
    assert (out / "sub-P/sub-P_sessions.tsv").read_text() == "session_id\nses-S1\nses-S2\n"


def test_adding_to_a_dataset_never_renames_what_it_holds(tmp_path: Path) -> None:
    bold = {"SeriesDescription": "bold", "ScanningSequence": "EP"}
    first = [series("P", "S1", "004_bold", bold, _image(tmp_path, "a.nii.gz"))]
    out = tmp_path / "out"
    result = plan(first)
    write_dataset(result.entries, out, False, result.report_lines())
    check_names_kept(out, plan(first + [series("P", "S2", "004_bold", bold, _image(tmp_path, "b.nii.gz"))]))
    later = plan(first + [series("P", "S1", "006_bold", bold, _image(tmp_path, "c.nii.gz"))])
    with pytest.raises(InvalidValue, match="P/S1/004_bold/s001.nii.gz was exported as .*task-fmri_bold.nii.gz and would now "
                                           "be .*task-fmri_run-1_bold.nii.gz .*export into a new folder"):
        check_names_kept(out, later)
    replaced = plan([series("P", "S1", "006_bold", bold, _image(tmp_path, "c.nii.gz"))])
    with pytest.raises(InvalidValue, match="holds P/S1/004_bold/s001.nii.gz, and would now hold P/S1/006_bold/s001.nii.gz"):
        check_names_kept(out, replaced)


def test_zip_stream_holds_the_dataset_under_one_folder(tmp_path: Path) -> None:
    image = _image(tmp_path, "a.nii.gz")
    result = plan([series("P", "S1", "002_t1", {"SeriesDescription": "t1"}, image)])
    data = b"".join(zip_stream(result.entries, "demo_bids", result.report_lines()))
    with zipfile.ZipFile(BytesIO(data)) as bundle:
        names = set(bundle.namelist())
        assert bundle.read("demo_bids/sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz") == image.read_bytes()
    assert {"demo_bids/dataset_description.json", "demo_bids/participants.tsv", "demo_bids/README",
            "demo_bids/sourcedata/northanc/report.txt"} <= names


def test_a_copy_is_the_users_to_edit_and_the_archive_file_stays_as_it_was(tmp_path: Path) -> None:
    source = _image(tmp_path, "a.nii.gz")
    result = plan([series("P", "S1", "002_t1", {"SeriesDescription": "t1"}, source)])
    write_dataset(result.entries, tmp_path / "out", False, result.report_lines())
    image = tmp_path / "out/sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz"
    with image.open("r+b") as edited:
        edited.write(b"edited")
    assert source.read_bytes() == b"\x1f\x8b not really a NIfTI"


def test_links_are_asked_for_read_only_and_reported(tmp_path: Path) -> None:
    source = _image(tmp_path, "a.nii.gz")
    result = plan([series("P", "S1", "002_t1", {"SeriesDescription": "t1"}, source)])
    written = write_dataset(result.entries, tmp_path / "out", True, result.report_lines())
    image = tmp_path / "out/sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz"
    assert image.stat().st_ino == source.stat().st_ino and (written.linked, written.copied) == (1, 0)
    assert stat.S_IMODE(image.stat().st_mode) & 0o222 == 0, "no write permission for anyone"
    report = (tmp_path / "out/sourcedata/northanc/report.txt").read_text()
    assert "hard links to the archive's files, read-only: do not edit them in place" in report


@pytest.mark.parametrize("link", [False, True])
def test_a_series_converted_again_replaces_its_image_in_the_dataset(tmp_path: Path, link: bool) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    source = _image(archive, "a.nii.gz")
    items = [series("P", "S1", "002_t1", {"SeriesDescription": "t1", "ConversionSoftwareVersion": "v1"}, source)]
    out = tmp_path / "out"
    result = plan(items)
    write_dataset(result.entries, out, link, result.report_lines())
    # As a conversion replaces a series: the old file goes (to the trash), a new one takes its name.
    source.rename(archive / "trashed.nii.gz")
    source.write_bytes(b"\x1f\x8b converted again, a little longer")
    result = plan([replace(items[0], sidecar={"SeriesDescription": "t1", "ConversionSoftwareVersion": "v2"})])
    written = write_dataset(result.entries, out, link, result.report_lines())
    image = out / "sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz"
    assert image.read_bytes() == source.read_bytes()
    assert written.replaced == ["sub-P/ses-S1/anat/sub-P_ses-S1_T1w.nii.gz"]
    assert json.loads((out / "sub-P/ses-S1/anat/sub-P_ses-S1_T1w.json").read_text())["ConversionSoftwareVersion"] == "v2"
    assert "1 file(s) replaced: changed in the archive" in (out / "sourcedata/northanc/report.txt").read_text()
    # The report tells of the latest export: once more without the replacement, then left alone.
    again = write_dataset(result.entries, out, link, result.report_lines())
    assert again.added == ["sourcedata/northanc/report.txt"] and again.replaced == []
    assert write_dataset(result.entries, out, link, result.report_lines()).added == []


def test_multi_echo_and_magnitude_phase_anatomy_gets_echo_and_part_not_runs() -> None:
    def gre(echo: int, part: str) -> SeriesFile:
        return series("P", "S", "009_t2star_me", {"SeriesDescription": "t2star_me", "EchoNumber": echo,
                                                   "ImageType": ["ORIGINAL", "PRIMARY", part]},
                      name=f"s009_e{echo}{'_ph' if part == 'P' else ''}.nii.gz")
    rules = {"rules": [{"description": "t2star", "suffix": "T2starw"}]}
    t1 = [series("P", "S", "003_mprage_me", {"SeriesDescription": "t1_mprage_me", "EchoNumber": echo,
                                              "ImageType": ["ORIGINAL", "PRIMARY", "M"]}, name=f"s003_e{echo}.nii.gz")
          for echo in (1, 2, 3)]
    result = plan([*t1, *(gre(echo, part) for echo in (1, 2) for part in ("M", "P"))], rules)
    names = sorted(name.rsplit("/", 1)[1] for name in result.images)
    assert names == [
        "sub-P_ses-S_echo-1_T1w.nii.gz", "sub-P_ses-S_echo-1_part-mag_T2starw.nii.gz",
        "sub-P_ses-S_echo-1_part-phase_T2starw.nii.gz", "sub-P_ses-S_echo-2_T1w.nii.gz",
        "sub-P_ses-S_echo-2_part-mag_T2starw.nii.gz", "sub-P_ses-S_echo-2_part-phase_T2starw.nii.gz",
        "sub-P_ses-S_echo-3_T1w.nii.gz"]
    assert not [note for note in result.notes if note.startswith("runs added")]
    single_echo = plan([gre(1, part) for part in ("M", "P")], rules)
    assert sorted(name.rsplit("/", 1)[1] for name in single_echo.images) == [
        "sub-P_ses-S_part-mag_T2starw.nii.gz", "sub-P_ses-S_part-phase_T2starw.nii.gz"]


def _fieldmap(times: dict[str, float], with_magnitudes: bool) -> Plan:
    magnitudes = [series("P", "S", "005_gre_field_mapping", {"SeriesDescription": "gre_field_mapping", "SeriesNumber": 5,
                                                              "ImageType": ["M"], "EchoNumber": echo, "EchoTime": te},
                         name=f"s005_e{echo}.nii.gz") for echo, te in ((1, 0.00492), (2, 0.00738))]
    phase = series("P", "S", "006_gre_field_mapping", {"SeriesDescription": "gre_field_mapping", "SeriesNumber": 6,
                                                       "ImageType": ["P"], "EchoNumber": 2, "EchoTime": 0.00738, **times},
                   name="s006_e2_ph.nii.gz")
    return plan([*(magnitudes if with_magnitudes else []), phase])


def _phasediff_sidecar(result: Plan) -> dict[str, Any]:
    (text,) = [e.text for e in result.entries if e.target.endswith("_phasediff.json")]
    return dict(json.loads(str(text)))


def test_phasediff_carries_both_echo_times_from_its_magnitudes_or_is_reported() -> None:
    written_by_dcm2niix = _fieldmap({"EchoTime1": 0.0049, "EchoTime2": 0.0074}, with_magnitudes=True)
    assert (_phasediff_sidecar(written_by_dcm2niix)["EchoTime1"], _phasediff_sidecar(written_by_dcm2niix)["EchoTime2"]) == \
        (0.0049, 0.0074)
    computed = _fieldmap({}, with_magnitudes=True)
    assert sorted(name.rsplit("/", 1)[1] for name in computed.images) == [
        "sub-P_ses-S_magnitude1.nii.gz", "sub-P_ses-S_magnitude2.nii.gz", "sub-P_ses-S_phasediff.nii.gz"]
    sidecar = _phasediff_sidecar(computed)
    assert (sidecar["EchoTime1"], sidecar["EchoTime2"]) == (0.00492, 0.00738)
    alone = _fieldmap({}, with_magnitudes=False)
    assert alone.images == {} and [u.source for u in alone.unmapped] == ["P/S/006_gre_field_mapping/s006_e2_ph.nii.gz"]
    assert "phasediff needs EchoTime1 and EchoTime2" in alone.report_lines()[0]
    assert "sub-P/sub-P_sessions.tsv" not in {e.target for e in alone.entries}
