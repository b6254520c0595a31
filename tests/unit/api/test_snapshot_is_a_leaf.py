"""The snapshot is the one status model that /status, /metrics, ``hadirector status`` are
views of. It stays a leaf (types and their JSON form only): importing the server, the
builder or the agent from it would close the snapshot -> server -> snapshot circle
(architecture.md, "a trap seen when the target was drawn")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parents[3] / "hadirector" / "api" / "snapshot.py"
# The shared vocabulary: model.HealthState/VrrpState/SyncRole/format_endpoint, ipvs.table.Stats.
ALLOWED = {"hadirector.model", "hadirector.ipvs.table"}


def test_the_snapshot_imports_only_the_shared_vocabulary_from_hadirector():
    tree = ast.parse(SNAPSHOT.read_text())
    ours = {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hadirector")}
    ours |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for a in node.names if a.name.startswith("hadirector")}
    assert ours <= ALLOWED, sorted(ours - ALLOWED)


def test_importing_the_snapshot_loads_no_agent_server_or_kernel_code():
    code = ("import sys, hadirector.api.snapshot\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith(('hadirector', 'aiohttp', 'pyroute2'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=SNAPSHOT.parents[2]).stdout.split())
    assert loaded <= {"hadirector", "hadirector.api", "hadirector.api.snapshot", "hadirector.model",
                      "hadirector.ipvs", "hadirector.ipvs.table"}, sorted(loaded)
