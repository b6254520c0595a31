"""Each import has one home (style item 7): within the IPVS layer pyroute2 lives only in hadirector/ipvs/netlink.py."""

import ast
from pathlib import Path

import hadirector

ROOT = Path(hadirector.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pyroute2_is_imported_only_by_the_netlink_backend():
    users = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ipvs").rglob("*.py")
             if any(m.split(".")[0] == "pyroute2" for m in imported_modules(p))}
    assert users == {"ipvs/netlink.py"}


def test_the_pure_ipvs_modules_do_no_io():
    for name in ("table.py", "planner.py"):
        mods = imported_modules(ROOT / "ipvs" / name)
        assert not mods & {"socket", "asyncio", "subprocess", "os", "time", "pyroute2"}, name
