"""PACS and other DICOM nodes: peers and senders, queries, retrieves, cohort pulls."""
