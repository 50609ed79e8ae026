"""Readings: controlled reader studies with forms, blinding, ordering, stages and agreement."""
