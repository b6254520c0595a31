"""The lab library: everything that builds, drives and checks hadirector from outside,
for the tests, the benchmarks and the demos. It is not part of the product (pyproject
installs only ``hadirector*``) and nothing under ``hadirector/`` imports it
(tests/unit/test_layering.py holds that).

Import it from the repository root (pytest puts the root on ``sys.path``; scripts run
as ``python -m lab.MODULE`` or ``python -m bench.SCRIPT`` from there):

- ``lab.kernel``: the kernel lab, a QEMU guest whose kernel has IPVS, and its pytest plugin;
- ``lab.progress``: waits and downloads that say what they wait for.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
