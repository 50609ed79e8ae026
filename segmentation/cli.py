"""``nora`` actions on ROIs: --rois, --roi_upload, --roi_op, --roi_stats, --roi_agreement,
--roi_consensus, --roi_to_seg, --roi_send and --roi_from_seg; and on the project's segmentation
models: --models, --model_train, --model_register and --model_publish.

Registered with ``nora`` through the ``northanc.nora`` entry point (see
nifti_archive/cli/extensions.py). ROIs are named by their file id, as ``--rois`` lists them.
This module only parses: the actions themselves live in segmentation.cli_commands, which loads
nibabel, highdicom and scipy, and is imported only when one of them runs, so that every other
``nora`` command starts without them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import IO, Any

from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue
from segmentation.training import DEFAULT_EPOCHS
from segmentation.vocabulary import ConsensusMethod, Operation

ROI_ACTIONS = ("rois", "roi_upload", "roi_op", "roi_stats", "roi_agreement", "roi_consensus", "roi_to_seg", "roi_send", "roi_from_seg")
MODEL_ACTIONS = ("models", "model_train", "model_register", "model_publish")
ACTIONS = ROI_ACTIONS + MODEL_ACTIONS
WAITING_ACTIONS = ("model_train",)
MODIFIERS = ("study", "reference", "label", "colour", "other", "iterations", "min_voxels", "images", "roi_ids", "method", "to_pacs")
# The model actions' own modifiers, and the actions they go with.
MODEL_MODIFIERS = {"epochs": ("model_train",), "name": ("model_train", "model_register")}


def add_arguments(actions: Any, parser: argparse.ArgumentParser) -> None:
    actions.add_argument("--rois", metavar="SUBJECT#STUDY", help="list a study's ROIs (every author's version of every label)")
    actions.add_argument("--roi_upload", metavar="MASK", help="save a mask NIfTI on --reference's grid as your version of --label")
    actions.add_argument("--roi_op", nargs=2, metavar=("ROI", "OPERATION"),
                         help=f"operate on an ROI ({', '.join(o.value for o in Operation)}); the result is your new version")
    actions.add_argument("--roi_stats", action="store_true", help="statistics of --images inside --roi_ids, as CSV")
    actions.add_argument("--roi_agreement", metavar="LABEL", help="agreement between the versions of LABEL in --study")
    actions.add_argument("--roi_consensus", metavar="LABEL", help="a consensus ROI of the versions of LABEL in --study")
    actions.add_argument("--roi_to_seg", type=int, metavar="ROI", help="write the ROI as a DICOM SEG again (a new instance)")
    actions.add_argument("--roi_send", type=int, metavar="ROI", help="send the ROI's DICOM SEG to the PACS peer --to_pacs")
    actions.add_argument("--roi_from_seg", metavar="SERIES_UID", help="turn a DICOM SEG series in Orthanc into ROIs (again)")
    parser.add_argument("--study", metavar="SUBJECT#STUDY", help="with --roi_agreement or --roi_consensus")
    parser.add_argument("--reference", type=int, metavar="FILE", help="with --roi_upload: the id of the image the mask is on")
    parser.add_argument("--label", help="with --roi_upload or --model_register (required), or --roi_op (a new label instead of the ROI's)")
    parser.add_argument("--colour", help="with --roi_upload: #rrggbb")
    parser.add_argument("--other", type=int, metavar="ROI", help="with --roi_op union, intersection or difference")
    parser.add_argument("--iterations", type=int, help="with --roi_op erode, dilate, open or close (default 1)")
    parser.add_argument("--min_voxels", type=int, help="with --roi_op remove_salt: the smallest component kept")
    parser.add_argument("--images", metavar="IDS", help="with --roi_stats: image file ids, comma-separated")
    parser.add_argument("--roi_ids", metavar="IDS", help="with --roi_stats: ROI ids, comma-separated")
    parser.add_argument("--method", choices=[m.value for m in ConsensusMethod], help="with --roi_consensus")
    parser.add_argument("--to_pacs", metavar="PEER", help="with --roi_send")
    actions.add_argument("--models", action="store_true", help="list the project's segmentation models and their versions")
    actions.add_argument("--model_train", metavar="LABEL",
                         help="train a model on the project's ROIs of LABEL as a batch job (project admins; see --epochs, --name)")
    actions.add_argument("--model_register", metavar="FILE",
                         help="register your own TorchScript model of --label (project admins); it must load to be ready")
    actions.add_argument("--model_publish", metavar="NAME[:VERSION]",
                         help="offer a ready model version (the newest by default) to the project's users (project admins)")
    parser.add_argument("--epochs", type=int, help=f"with --model_train (default {DEFAULT_EPOCHS})")
    parser.add_argument("--name", help="with --model_train or --model_register: the model's name (default: its label)")


def check(args: argparse.Namespace, action: str) -> None:
    given = [name for name in MODIFIERS if getattr(args, name, None) is not None]
    if given and action not in ROI_ACTIONS and not (given == ["label"] and action == "model_register"):
        raise InvalidValue(f"--{given[0]} goes with the --roi_* actions")
    for name, actions in MODEL_MODIFIERS.items():
        if getattr(args, name, None) is not None and action not in actions:
            raise InvalidValue(f"--{name} goes with {' or '.join('--' + a for a in actions)}")


def _when_run(action: str) -> Callable[[Archive, Any, IO[str]], None]:
    def run(archive: Archive, request: Any, out: IO[str]) -> None:
        from segmentation import cli_commands

        cli_commands.COMMANDS[action](archive, request, out)

    return run


COMMANDS = {action: _when_run(action) for action in ACTIONS}
