"""Training segmentation networks on a project's ROIs, as a batch job (the ``segtrain`` job).

``dataset`` and ``job`` run with the archive; ``train_unet.py`` and ``check_model.py`` are scripts
for the segmentation assistant's Python (torch and MONAI) and import nothing of the archive.
"""

# What the runner writes into a training job's staging folder (its working directory) for it.
CONFIG_FILE = "segtrain.json"

# The predefined job that trains a model, and its epochs: here, apart from job.py's imports, so that
# ``nora``'s parser and the job runner name them without loading the archive's ROI machinery.
SEGTRAIN = "segtrain"
DEFAULT_EPOCHS = 50
MAX_EPOCHS = 2000
