"""Training segmentation networks on a project's ROIs, as a batch job (the ``segtrain`` job).

``dataset`` and ``job`` run with the archive; ``train_unet.py`` and ``check_model.py`` are scripts
for the segmentation assistant's Python (torch and MONAI) and import nothing of the archive.
"""

# What the runner writes into a training job's staging folder (its working directory) for it.
CONFIG_FILE = "segtrain.json"
# The trainer's state after its last finished epoch, in the staging folder; the runner keeps it
# in the run's folder when an attempt ends unfinished, and a rerun resumes from it.
CHECKPOINT = "checkpoint.pt"

# The predefined job that trains a model, and its epochs: here, apart from job.py's imports, so that
# ``nora``'s parser and the job runner name them without loading the archive's ROI machinery.
SEGTRAIN = "segtrain"
DEFAULT_EPOCHS = 50
MAX_EPOCHS = 2000

# The predefined job that trains a model on the images and masks FILE patterns name in the selected
# studies (the batchtool's entry point to the same training).
TRAIN = "train"

# The predefined job that runs a model of the project on an image and saves the mask as an ROI,
# and the config the runner writes for each such job of a run (by its place in the batch).
SEGAPPLY = "segapply"
APPLY_CONFIG = "segapply-{index}.json"
