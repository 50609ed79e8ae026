"""The committed orthanc.json is the configuration the run command generates; Orthanc's environment."""

from __future__ import annotations

import json
from pathlib import Path

from nifti_archive.processes import python_executable
from nifti_archive.settings import Settings, load_settings
from orthanc_plugin.deployment import DICOM_TCP_ENVIRONMENT, deployment_config, orthanc_environment

ROOT = Path(__file__).resolve().parents[1]


def test_committed_orthanc_json_matches_the_generator() -> None:
    assert json.loads((ROOT / "orthanc.json").read_text()) == deployment_config()


def test_deployment_is_locked_down() -> None:
    config = deployment_config()
    assert config["AuthenticationEnabled"] is True and config["RemoteAccessAllowed"] is False
    assert config["MaximumStorageSize"] == 0 and config["MaximumPatientCount"] == 0
    assert config["DicomAet"] == "NORTHANC" and config["DicomPort"] == 4242 and config["HttpPort"] == 8042


def test_orthanc_and_its_children_load_the_settings_they_were_started_with(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url="sqlite:///elsewhere.sqlite",
                        archive_root=tmp_path / "tree", log_dir=tmp_path / "logs", conversion_workers=5,
                        accept_unregistered_senders=False, orthanc_url="http://127.0.0.1:18042")
    environment = orthanc_environment(settings)
    assert load_settings(environment) == settings
    assert environment["NORTHANC_PYTHON"] == python_executable()
    assert {name: environment[name] for name in DICOM_TCP_ENVIRONMENT} == DICOM_TCP_ENVIRONMENT
