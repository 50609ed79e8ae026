"""Drop folders: folders an instrument writes into (often NFS or SMB mounts), polled, their new
entries imported by the importer of ``nora --import`` once they have stopped changing.

``folders`` declares them and reports on them, ``scan`` holds the decisions (what is stable, what
is refused, where it goes), ``step`` imports one entry, ``poller`` runs the passes and ``service``
runs the poller with the stack.
"""
