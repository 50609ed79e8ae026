"""Keeping an installation: backups of the index and the NIfTI tree, restores, and rebuilding a
project's files from the originals in Orthanc."""
