"""The Northanc portal: a Flask application over the NIfTI archive (see portal.app.create_app)."""
