"""hadirector: a keepalived-style HA director agent for Linux IPVS.

``__version__`` is the installed package's version (pyproject.toml is its one source),
read on first use: importing the package stays free of importlib.metadata.
"""

from __future__ import annotations


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("hadirector")
    except metadata.PackageNotFoundError:      # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        value = _version()
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'hadirector' has no attribute {name!r}")
