"""Every program the code runs is in debian-packages.txt, the one list `./run` installs.

A fresh Debian lacks programs this machine has (a minimal install has no procps, so
no `sysctl` and no `/bin/kill`): a program missing from the list passes every test
here and fails on the first clean machine. So the list is checked against the code,
not against this machine.

The scan reads the Python sources (the product, the labs, the benchmarks, the tests)
and collects the program of every literal argv: a list or tuple whose first item is a
string, handed to subprocess / asyncio / shutil.which, or the first string argument of
a lab ``sh("prog", ...)`` helper; ``ip netns exec NS prog ...`` counts ``prog`` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("hadirector", "lab", "bench", "tests")
SCRIPTS = ("run", ".ci/run", "netns-lab/demo", "netns-lab/election-demo")

# Callables whose first positional argument is an argv list (or, for the *argv style
# helpers, the program itself).
ARGV_LIST_CALLS = {"run", "_run", "Popen", "check_output", "check_call", "call", "run_in_lab",
                   "run_script", "script_probe"}
PROGRAM_FIRST_CALLS = {"create_subprocess_exec", "which", "sh", "_sh"}


def listed() -> dict[str, str]:
    out = {}
    for line in (ROOT / "debian-packages.txt").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            assert len(words) == 2 or (len(words) == 3 and words[2].startswith("unit=")), \
                f"debian-packages.txt: {line!r} is not 'command package [unit=NAME]'"
            out[words[0]] = words[1]
    return out


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _strings(node: ast.expr) -> list[str] | None:
    """The leading string constants of a list/tuple literal (None if it is not one)."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return None
    out = []
    for elt in node.elts:
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
            out.append(elt.value)
        else:
            break
    return out


def _programs(argv: list[str]) -> set[str]:
    out = set()
    # "ip netns exec NS prog": the namespace is usually a variable, so the list of
    # constants stops before it; a literal namespace name is skipped here.
    if argv[:3] == ["ip", "netns", "exec"]:
        out.add("ip")
        argv = argv[4:]
    if argv and argv[0] and not argv[0].startswith("-"):
        # A path that is meant not to exist (a test of a missing script) is no program.
        name = Path(argv[0]).name
        out.add("nonexistent" + name if argv[0].startswith("/nonexistent") else name)
    return out


def programs_in(path: Path) -> set[str]:
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _name(node.func)
        first = node.args[0]
        argv = None
        if name in ARGV_LIST_CALLS:
            argv = _strings(first)
        elif name in PROGRAM_FIRST_CALLS:
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                argv = [first.value, *[a.value for a in node.args[1:]
                                      if isinstance(a, ast.Constant) and isinstance(a.value, str)]]
            else:
                argv = _strings(first)
        if argv:
            found |= _programs(argv)
    return found


def python_sources() -> list[Path]:
    out = []
    for top in SOURCES:
        base = ROOT / top
        out += [p for p in base.rglob("*.py") if ".venv" not in p.parts]
    return out


def test_every_program_the_code_runs_is_in_the_install_list():
    have = listed()
    missing: dict[str, list[str]] = {}
    for path in python_sources():
        for prog in programs_in(path):
            # Programs the project itself provides or builds are not Debian's.
            if prog in {"python", "python3", "hadirector"} or prog.endswith(".py") \
                    or prog.startswith("nonexistent"):
                continue
            if prog not in have:
                missing.setdefault(prog, []).append(str(path.relative_to(ROOT)))
    assert not missing, (
        "programs run by the code but missing from debian-packages.txt "
        "(add 'command package'): " + "; ".join(f"{p} in {', '.join(sorted(set(w)))}"
                                                for p, w in sorted(missing.items())))


def test_the_scan_finds_programs_in_every_call_style(tmp_path):
    src = tmp_path / "sample.py"
    src.write_text(
        "import subprocess, asyncio, shutil\n"
        "subprocess.run(['sysctl', '-w', 'x=1'])\n"
        "subprocess.Popen(['ip', 'netns', 'exec', 'lab-a', 'tcpdump', '-n'])\n"
        "asyncio.create_subprocess_exec('keepalived', '-n')\n"
        "shutil.which('nft')\n"
        "sh('ipvsadm', '-Ln', ns=x)\n"
        "subprocess.run(cmd)\n"
    )
    assert programs_in(src) == {"sysctl", "ip", "tcpdump", "keepalived", "nft", "ipvsadm"}


def test_run_installs_from_the_list_and_python3_venv():
    run = (ROOT / "run").read_text()
    assert "debian-packages.txt" in run
    assert "python3-venv" in run and "ensurepip" in run
    for script in SCRIPTS:
        assert (ROOT / script).exists(), script
