"""Tractograms (TCK, TRK): selecting streamlines, saving a selection, track-density maps.

``geometry`` holds the pure computations on streamlines in world millimetres; ``store`` reads
and writes the archive's files and registers what it writes.
"""
