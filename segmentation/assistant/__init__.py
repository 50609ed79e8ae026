"""The segmentation assistant: a MONAI Label app on the archive's own images.

It runs in its own virtual environment (``requirements.lock``: torch and MONAI Label, whose pins
clash with the portal's), on localhost, and answers only the portal, which holds its token and
decides who may segment which image. Nothing here imports the archive's database or Flask.
"""
