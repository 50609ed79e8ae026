"""The committed orthanc.json is the configuration the run command generates."""

from __future__ import annotations

import json
from pathlib import Path

from orthanc_plugin.deployment import deployment_config

ROOT = Path(__file__).resolve().parents[1]


def test_committed_orthanc_json_matches_the_generator() -> None:
    assert json.loads((ROOT / "orthanc.json").read_text()) == deployment_config()


def test_deployment_is_locked_down() -> None:
    config = deployment_config()
    assert config["AuthenticationEnabled"] is True and config["RemoteAccessAllowed"] is False
    assert config["MaximumStorageSize"] == 0 and config["MaximumPatientCount"] == 0
    assert config["DicomAet"] == "NORTHANC" and config["DicomPort"] == 4242 and config["HttpPort"] == 8042
