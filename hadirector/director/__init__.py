"""The node-level policy of a director, with no I/O (see ``node.py``)."""
