"""The Debian package's sources agree with the project (fast checks; the real build and
install run in tests/package/test_deb_install.py)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from hadirector.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]
DEB = ROOT / "packaging" / "deb"


def test_license_is_the_gpl2_that_pyproject_names():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"]["text"] == "GPL-2.0-or-later"
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text


def test_the_debian_changelog_names_the_pyproject_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    first = (DEB / "changelog").read_text().splitlines()[0]
    assert re.fullmatch(rf"hadirector \({re.escape(version)}\) unstable; urgency=\w+", first)
    # The trailer line as dpkg-parsechangelog wants it: two spaces before an RFC 2822 date.
    assert re.search(r"^ -- .+ <.+>  \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$",
                     (DEB / "changelog").read_text(), re.M)


def test_copyright_is_machine_readable_and_says_gpl2_or_later():
    text = (DEB / "copyright").read_text()
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
    assert "License: GPL-2+" in text and "/usr/share/common-licenses/GPL-2" in text


def test_the_shipped_config_is_valid_and_single_node():
    cfg = load_config(ROOT / "etc" / "hadirector.yaml")
    assert len(cfg.vrrp_instances) == 1 and cfg.virtual_services
    assert not cfg.vrrp_instances[0].unicast_peers


def test_maintainer_scripts_are_posix_sh_and_never_enable_the_unit():
    for name in ("postinst", "prerm", "postrm"):
        script = DEB / name
        subprocess.run(["sh", "-n", str(script)], check=True)
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n") and "set -e" in text
        # The operator chooses where and when the agent runs.
        code = re.sub(r"#.*", "", text)
        assert not re.search(r"\b(enable|start)\b", code), name
