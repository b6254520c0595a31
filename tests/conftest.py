"""Shared pytest setup for the whole suite.

The kernel-lab plugin runs tests marked ``kernel`` inside a QEMU guest whose kernel has
IPVS when this machine's kernel does not (see lab/kernel/README.md).
"""

pytest_plugins = ["lab.kernel.pytest_plugin"]
