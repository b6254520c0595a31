"""hadirector: a keepalived-style HA director agent for Linux IPVS.

``__version__`` is the installed package's version (pyproject.toml is its one source),
read on first use: importing the package stays free of importlib.metadata.
"""

from __future__ import annotations


def _version() -> str:
    # The first sys.path entry's hadirector-*.dist-info, as importlib.metadata looks it up,
    # read directly: importlib.metadata imports email, zipfile and csv for this one string
    # (~1.5 MB of an idle agent, seconds of start-up under emulation).
    import os
    import sys

    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if name.startswith("hadirector-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as f:
                        for line in f:
                            if not line.strip():
                                break                   # end of the headers
                            if line.startswith("Version:"):
                                return line.partition(":")[2].strip()
                except OSError:
                    pass
    from importlib import metadata              # anything else (an egg, a zip): the library

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
