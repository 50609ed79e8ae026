"""BIDS export of a project: mapping rules, BIDS names, and writing the dataset."""
