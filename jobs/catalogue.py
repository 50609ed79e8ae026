"""The jobs a batch is composed of, as the batchtool's menu offers them: category, help, typed arguments.

Data only, so that parsing a batch loads no image code. The predefined jobs' code is in
jobs/library.py; a generic job (bash, python) runs its author's script with arguments named
after the ``$f1``, ``$o1`` ... the script uses, so its definition lists none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from jobs.argument_types import ArgType
from segmentation.training import SEGAPPLY, SEGTRAIN, TRAIN

__all__ = ["CATALOGUE", "SEGAPPLY", "SEGTRAIN", "TRAIN", "ArgDefinition", "Category", "JobDefinition"]


class Category(Enum):
    IMAGE = "image"
    ROI = "roi"
    ML = "ml"
    MISC = "misc"
    GENERIC = "generic"


@dataclass(frozen=True)
class ArgDefinition:
    name: str
    type: ArgType
    help: str
    required: bool = True
    # What the composer fills in; a spec names every argument it gives.
    default: str | float | bool | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobDefinition:
    name: str
    category: Category
    title: str
    help: str
    args: tuple[ArgDefinition, ...] = ()
    # Generic jobs take a script; their arguments are whatever it uses.
    script: bool = False
    # Runs once over all selected studies (a project-level batch): its FILE arguments name a file
    # in each of them.
    collective: bool = False

    def arg(self, name: str) -> ArgDefinition | None:
        return next((a for a in self.args if a.name == name), None)


_IMAGE = ArgDefinition("f1", ArgType.FILE, "the image (a NIfTI file pattern below the study folder, e.g. t1*/*.nii.gz)")
_DEFINITIONS = (
    JobDefinition(
        "stats", Category.IMAGE, "Intensity statistics",
        "Shape, voxel size, mean, std, minimum, maximum and non-zero volume of an image, as JSON;"
        " with a mask, within the mask, and the mask's volume.",
        (_IMAGE, ArgDefinition("f2", ArgType.FILE, "a mask on the image's grid (optional)", required=False),
         ArgDefinition("o1", ArgType.OUT, "the JSON written", default="stats/stats.json")),
    ),
    JobDefinition(
        "reorient", Category.IMAGE, "Reorient to RAS+",
        "The image in the closest RAS+ orientation: voxels permuted and flipped, no interpolation; the affine"
        " still says the same place in the scanner.",
        (_IMAGE, ArgDefinition("o1", ArgType.OUT, "the reoriented image", default="reoriented/image.nii.gz")),
    ),
    JobDefinition(
        "resample", Category.IMAGE, "Resample to isotropic voxels",
        "The image on an isotropic grid: linear interpolation, or nearest neighbour for masks and labels.",
        (_IMAGE, ArgDefinition("o1", ArgType.OUT, "the resampled image", default="resampled/image.nii.gz"),
         ArgDefinition("n1", ArgType.NUMERIC, "the voxel size in mm", default=1.0),
         ArgDefinition("c1", ArgType.OPTION, "the interpolation", default="linear", options=("linear", "nearest"))),
    ),
    JobDefinition(
        "roistats", Category.ROI, "ROI statistics",
        "Median, quartiles, mean, std and volume (and area for a one-slice ROI) of the image inside an ROI, as"
        " JSON; where the grids differ the image is sampled at the ROI's voxel centres in world space.",
        (_IMAGE, ArgDefinition("f2", ArgType.FILE, "the ROI mask (e.g. rois/*.nii.gz)"),
         ArgDefinition("o1", ArgType.OUT, "the JSON written", default="stats/roi.json")),
    ),
    JobDefinition(
        SEGAPPLY, Category.ML, "Apply a segmentation model",
        "Runs one of the project's segmentation models (trained here or registered; nora --models) on the image"
        " and saves its mask as a new version of the model's label, an ROI by you with the model as its algorithm.",
        (_IMAGE, ArgDefinition("s1", ArgType.STRING, "the model: NAME (its published version) or NAME vN")),
    ),
    JobDefinition(
        TRAIN, Category.ML, "Train a segmentation model",
        "A 3D U-Net trained on the image and label mask of every selected study (a project-level batch: one run"
        " over them all; a fifth held out for validation), its progress one line per epoch in the run's log. The"
        " model becomes the next version of its name (apply it with segapply) and is written with its metrics into"
        " an analysis. A rerun of a failed or cancelled training resumes from its last finished epoch.",
        (ArgDefinition("f1", ArgType.FILE, "the image, in each selected study"),
         ArgDefinition("f2", ArgType.FILE, "its label mask (non-zero inside), in each selected study"),
         ArgDefinition("s1", ArgType.STRING, "the model's name, which is also the label its ROIs get"),
         ArgDefinition("n1", ArgType.NUMERIC, "the epochs", default=50.0),
         ArgDefinition("p1", ArgType.PATHOUT, "the folder of an analysis (analysis:NAME) the model and its metrics go in",
                       default="model")),
        collective=True,
    ),
    JobDefinition(
        "bids", Category.MISC, "Export as BIDS",
        "The project as a BIDS dataset, mapped by its BIDS rules; copies, since a job cannot hard-link the archive.",
        (ArgDefinition("p1", ArgType.PATHOUT, "the folder the dataset is written to", default="bids"),
         ArgDefinition("s1", ArgType.STRING, "a file-search filter of the studies to export (optional: all)", required=False)),
    ),
    JobDefinition(
        "bash", Category.GENERIC, "Bash script",
        "Your script, run by bash in the job sandbox. $f1..$f9 are FILE arguments, $o1.. OUT, $p1.. PATHOUT,"
        " $s1.. STRING, $n1.. NUMERIC, $b1.. LOGICAL, $c1.. OPTION; each use adds its row. `nora` is there,"
        " with a token for the project.",
        script=True,
    ),
    JobDefinition(
        "python", Category.GENERIC, "Python script",
        "Your script, run by Python in the job sandbox, with nibabel and numpy. Arguments are environment"
        " variables (os.environ['f1']) and, in name order, sys.argv.",
        script=True,
    ),
)
CATALOGUE: dict[str, JobDefinition] = {definition.name: definition for definition in _DEFINITIONS}
