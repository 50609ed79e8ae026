"""The predefined jobs, checked against the reference NIfTI's own geometry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jobs import library
from jobs.spec import PREDEFINED_JOBS
from tests.reference import DATASETS

SAGITTAL = DATASETS["dcm_qa"] / "Ref" / "sag_asc_35sl_22.nii"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    def set_args(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_args


def test_the_library_offers_what_specs_accept() -> None:
    assert set(library.JOBS) == PREDEFINED_JOBS


def test_reorient_to_ras_keeps_every_voxel_where_it_was(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert nib.aff2axcodes(nib.load(SAGITTAL).affine) != ("R", "A", "S")
    env(f1=str(SAGITTAL), o1=str(tmp_path / "ras.nii.gz"))
    library.reorient()
    before, after = nib.load(SAGITTAL), nib.load(tmp_path / "ras.nii.gz")
    assert nib.aff2axcodes(after.affine) == ("R", "A", "S")
    data_before, data_after = np.asanyarray(before.dataobj), np.asanyarray(after.dataobj)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ijk = [int(rng.integers(0, n)) for n in before.shape[:3]]
        world = before.affine @ [*ijk, 1]
        moved = np.rint(np.linalg.inv(after.affine) @ world).astype(int)[:3]
        assert np.array_equal(data_before[tuple(ijk)], data_after[tuple(moved)])


def test_resample_to_isotropic_grid(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "vol.nii.gz"
    first = nib.load(SAGITTAL)
    nib.save(nib.Nifti1Image(np.asanyarray(first.dataobj)[..., 0], first.affine), source)
    env(f1=str(source), o1=str(tmp_path / "iso.nii.gz"), n1="4")
    library.resample()
    resampled = nib.load(tmp_path / "iso.nii.gz")
    assert np.allclose(resampled.header.get_zooms(), (4, 4, 4))
    extent = lambda img: np.abs(np.array(img.shape[:3]) * np.array(img.header.get_zooms()[:3]))  # noqa: E731
    assert np.all(np.abs(np.sort(extent(resampled)) - np.sort(extent(nib.load(source)))) <= 8)


def test_stats_with_and_without_mask(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = np.zeros((4, 4, 4), dtype=np.int16)
    data[1:3, 1:3, 1:3] = 10
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    env(f1=str(tmp_path / "img.nii.gz"), o1=str(tmp_path / "all.json"))
    library.stats()
    everything = json.loads((tmp_path / "all.json").read_text())
    assert everything["voxels"] == 64 and everything["max"] == 10 and everything["nonzero_volume_ml"] == 8 * 8 / 1000
    env(f2=str(tmp_path / "mask.nii.gz"), o1=str(tmp_path / "masked.json"))
    library.stats()
    masked = json.loads((tmp_path / "masked.json").read_text())
    assert masked["mask"] == {"voxels": 8, "volume_ml": 0.064} and masked["mean"] == 10 and masked["std"] == 0
