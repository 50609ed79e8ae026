"""The catalogue: projects, registered files, tags, the trash, job outputs, meta data, viewer documents."""
