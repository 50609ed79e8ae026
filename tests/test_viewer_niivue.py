"""The NiiVue bundle the portal serves: the installed one with its gradient computed only for the
shaders that sample it, and a bundle the edits were not written for refused, never served as is."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.app import FRONTEND
from portal.pages.viewer import NIIVUE, NIIVUE_EDITS, edited_niivue


def test_the_served_niivue_computes_the_gradient_only_for_shaders_that_sample_it() -> None:
    body, digest = edited_niivue(FRONTEND / "node_modules")
    text = body.decode("utf-8")
    for old, new in NIIVUE_EDITS:
        assert text.count(new) == 1 and old not in text
    assert len(digest) == 64


def test_a_niivue_without_the_edited_code_is_refused(tmp_path: Path) -> None:
    installed = (FRONTEND / "node_modules" / NIIVUE).read_text(encoding="utf-8")
    other = tmp_path / NIIVUE
    other.parent.mkdir(parents=True)
    other.write_text(installed.replace(NIIVUE_EDITS[0][0], "      this.volumeTexture = outTexture;\n"), encoding="utf-8")
    with pytest.raises(RuntimeError, match="not the NiiVue the viewer was written for"):
        edited_niivue(tmp_path)
