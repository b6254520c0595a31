"""The director core is pure: no sockets, event loop, clock, processes or kernel access,
and nothing from the shells (agent/, net/, ipvs netlink, api/)."""

import ast
from pathlib import Path

import hadirector.director

FORBIDDEN = {"socket", "asyncio", "time", "select", "selectors", "threading", "subprocess",
             "os", "random", "datetime", "pyroute2", "scapy", "structlog", "aiohttp"}
ALLOWED = ("hadirector.director", "hadirector.vrrp", "hadirector.model")


def test_director_package_imports_nothing_that_does_io_or_reads_a_clock():
    pkg = Path(hadirector.director.__file__).parent
    found = {}
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in FORBIDDEN or (root == "hadirector" and not name.startswith(ALLOWED)):
                    found.setdefault(path.name, []).append(name)
    assert found == {}
