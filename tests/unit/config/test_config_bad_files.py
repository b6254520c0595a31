"""Every file under bad/ is rejected with a message that names the file, the line and
column, the key path and what was expected.

Each file states the expected fragment in its first line, e.g.
``# expect: 8:15: vrrp_instances[0].priority: expected an integer 1..255, got 300``;
the error must contain ``<file>:<fragment>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hadirector.config import ConfigError, load_config

BAD = Path(__file__).parent / "bad"
FILES = sorted(BAD.glob("*.yaml"))


def expected_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    m = re.fullmatch(r"# expect: (.+)", first)
    assert m, f"{path.name}: first line must be '# expect: LINE:COL: key.path: message'"
    return m.group(1)


def test_there_are_enough_malformed_examples():
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_malformed_file_is_rejected_naming_file_line_and_key(path: Path):
    expect = expected_fragment(path)
    assert re.match(r"\d+:\d+: ", expect), "the fragment must start with line:column"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    messages = [str(issue) for issue in info.value.issues]
    assert any(f"{path}:{expect}" in msg for msg in messages), "\n".join(messages)
    # The issue that matched carries the same facts as structured fields.
    line, col = (int(x) for x in expect.split(":")[:2])
    assert any(i.source == str(path) and i.line == line and i.column == col for i in info.value.issues)
