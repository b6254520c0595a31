"""The kernel lab: run commands and tests in a QEMU guest whose kernel has IPVS.

See README.md beside this file. Public API::

    from lab.kernel import run_in_lab, host_has_ipvs
    result = run_in_lab(["ipvsadm", "-Ln"], cwd=".", timeout=120)
    result.returncode, result.output
"""

from .kernel import KernelFetchError, LabKernel, cache_dir, ensure_kernel
from .runner import (
    DEFAULT_MODULES,
    IN_LAB_ENV,
    IPVS_SCHEDULERS,
    LabBootError,
    LabError,
    LabResult,
    host_has_ipvs,
    in_lab,
    run_in_lab,
)

__all__ = [
    "DEFAULT_MODULES",
    "IN_LAB_ENV",
    "IPVS_SCHEDULERS",
    "KernelFetchError",
    "LabBootError",
    "LabError",
    "LabKernel",
    "LabResult",
    "cache_dir",
    "ensure_kernel",
    "host_has_ipvs",
    "in_lab",
    "run_in_lab",
]
