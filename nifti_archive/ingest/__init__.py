"""DICOM in: the conversion queue and its worker, imports, routing, naming, pseudonyms, quarantine."""
