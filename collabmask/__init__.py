"""The `collabmask` command: the app on one machine, and its data, from a shell.

The top of the import graph: it drives config and annotation, and nothing imports it.
"""
