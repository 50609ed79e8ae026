"""The archive as MONAI Label's datastore: an image id is a NIfTI file's path inside the archive.

MONAI Label's own datastores copy or index whole collections; here the archive already is the
collection, and who may see which of its images is the portal's decision, made before a request
reaches the assistant. So this datastore lists nothing, reads only files inside the archive root
(never a path that leaves it, however spelt), and writes nothing: labels become ROIs through the
portal, which versions them and keeps their provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NotInArchive(ValueError):
    """An image id that names no NIfTI file inside the archive."""


def archive_image(root: Path, image_id: str) -> Path:
    """The NIfTI file that ``image_id`` (a path relative to the archive root) names."""
    relative = Path(image_id)
    if relative.is_absolute() or ".." in relative.parts or not image_id.endswith(NIFTI_SUFFIXES):
        raise NotInArchive(f"{image_id!r} is not a NIfTI path inside the archive")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise NotInArchive(f"{image_id!r} is not a NIfTI file in the archive")
    return path


def _read_only(*_: object, **__: object) -> Any:
    raise MONAILabelException(
        MONAILabelError.INVALID_INPUT,
        "the archive keeps images and labels: save an ROI through the portal",
    )


def _nothing(*_: object, **__: object) -> list[Any]:
    return []


class ArchiveDatastore(Datastore):  # type: ignore[misc]
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._name = "Northanc archive"
        self._description = "NIfTI images of the archive's projects, as the portal allows each user"

    def name(self) -> str:
        return self._name

    def set_name(self, name: str) -> None:
        self._name = name

    def description(self) -> str:
        return self._description

    def set_description(self, description: str) -> None:
        self._description = description

    def get_image_uri(self, image_id: str) -> str:
        try:
            return str(archive_image(self._root, image_id))
        except NotInArchive as exc:
            # A 404 like any image the caller may not see, not MONAI Label's 500.
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    def get_image(self, image_id: str, params: Any = None) -> Any:
        return self.get_image_uri(image_id)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        return {"path": self.get_image_uri(image_id)}

    def status(self) -> dict[str, Any]:
        # Counts are per user and per project: the portal has them, the assistant does not.
        return {"images": None, "labels": None, "read_only": True}

    def json(self) -> dict[str, Any]:
        return {"name": self._name, "description": self._description, "objects": {}}

    def refresh(self) -> None:
        return None

    datalist = list_images = get_labeled_images = get_unlabeled_images = _nothing

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        return {}

    get_label_by_image_id = get_label = get_label_uri = get_label_info = _read_only
    get_dataset_archive = add_image = remove_image = save_label = remove_label = _read_only
    update_image_info = update_label_info = _read_only
