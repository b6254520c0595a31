"""Generate the man pages hadirector(8) and hadirector.yaml(5) from the code itself.

Theory of operation: nothing in a page is typed twice. hadirector(8) walks the
argparse parser the CLI really uses (``hadirector.cli.build_parser``): every
subcommand, option, metavar and default; the exit codes come from
``hadirector.exitcodes``. hadirector.yaml(5) walks the loader's ``Record`` tables from
the top-level one down (each converter says what it accepts in ``conv.doc``, and
which record it holds in ``conv.spec``), takes every default from the model's
dataclasses, and the words and keepalived keywords from each key's ``doc=K(...)`` on
its loader line. A key added to the loader or a field to the model shows up in the
page, or fails ``tests/unit/test_manpages.py``.

    python -m hadirector.manpages OUTDIR     # writes OUTDIR/hadirector.8, hadirector.yaml.5
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import sys
from pathlib import Path
from typing import Any, Iterator

from hadirector import model as m
from hadirector.config import loader as L
from hadirector.config.fields import KeyDoc, Record
from hadirector.exitcodes import DESCRIPTIONS, FINAL, ExitCode

DEFAULT_CONFIG = "/etc/hadirector/hadirector.yaml"
# Probe keys live on the probe classes, not on HealthCheck itself.
_MORE_DEFAULTS: dict[type, tuple[type, ...]] = {m.HealthCheck: (m.HttpProbe, m.ScriptProbe, m.DnsProbe, m.UdpProbe, m.SmtpProbe)}


def version() -> str:
    try:
        from importlib.metadata import version as dist_version
        return dist_version("hadirector")
    except Exception:        # not installed (a source tree): the page still builds
        return "unknown"


# --- roff ------------------------------------------------------------------------------


def esc(text: str) -> str:
    """Plain text -> roff text: backslashes, and a dot or quote at the start of a line."""
    text = text.replace("\\", "\\e")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def opt(text: str) -> str:
    """An option or a literal: hyphens are minus signs, so it can be searched and pasted."""
    return esc(text).replace("-", "\\-")


def _header(name: str, section: int, title: str) -> list[str]:
    return [f'.TH {name.upper()} {section} "" "hadirector {version()}" "{title}"']


# --- hadirector(8) ------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _option_lines(action: argparse.Action) -> list[str]:
    if action.option_strings:
        meta = ""
        if action.nargs != 0:
            meta = action.metavar or action.dest.upper()
            if isinstance(meta, tuple):
                meta = " ".join(meta)
        names = ", ".join(f"\\fB{opt(s)}\\fR" + (f" \\fI{esc(str(meta))}\\fR" if meta else "")
                          for s in action.option_strings)
    else:
        names = f"\\fI{esc(str(action.metavar or action.dest))}\\fR"
    text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text \
            and action.nargs != 0 and action.option_strings:
        text += f" (default: {action.default})"
    if action.choices and not isinstance(action, argparse._SubParsersAction) and "{" not in str(action.metavar):
        text += " One of: " + ", ".join(map(str, action.choices)) + "."
    return [".TP", names, esc(text.strip() or "(no description)")]


def cli_page(parser: argparse.ArgumentParser | None = None) -> str:
    if parser is None:
        from hadirector.cli import build_parser
        parser = build_parser()
    out = _header("hadirector", 8, "System Administration")
    out += [".SH NAME", "hadirector \\- VRRP and IPVS director agent, in the spirit of keepalived",
            ".SH SYNOPSIS", ".B hadirector", ".I command", ".RI [ options ]",
            ".SH DESCRIPTION",
            esc("hadirector runs on each of a pair of directors in front of a Linux Virtual Server "
                "(IPVS) pool. It elects which director holds the virtual IPs with VRRP (RFC 5798, or "
                "RFC 3768 beside a keepalived peer), announces a takeover with gratuitous ARP, "
                "health-checks the real servers, programs the kernel IPVS table and switches the "
                "IPVS connection-sync daemon with the VRRP state. Its configuration is one YAML "
                "file per director, described in"),
            ".BR hadirector.yaml (5).",
            ".PP",
            esc("Under systemd it runs as hadirector.service (not enabled when the package is "
                "installed); SIGHUP or hadirector reload applies a changed configuration and keeps "
                "the state of the parts that did not change."),
            ".SH COMMANDS"]
    # -h/--help is on every command: listed once, here.
    top_options = [a for a in parser._actions if a.option_strings]
    for name, help_, sub in _subparsers(parser):
        out += [f".SS {name}", esc(help_.strip().rstrip(".") + ".") if help_ else "",
                ".PP", ".nf", esc(sub.format_usage().strip()), ".fi"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            out += _option_lines(action)
    if top_options:
        out += [".SH OPTIONS"]
        for action in top_options:
            out += _option_lines(action)
    out += [".SH EXIT STATUS",
            esc("One code per kind of failure, the same in every command. The unit does not restart "
                "the agent on a final one (RestartPreventExitStatus=" +
                " ".join(str(int(c)) for c in FINAL) + ").")]
    for code in ExitCode:
        out += [".TP", f"\\fB{int(code)}\\fR", esc(DESCRIPTIONS[code])]
    out += [".SH ENVIRONMENT", ".TP", ".B HADIRECTOR_LOG_FORMAT",
            esc("console or json: overrides --log-format and node.log_format."),
            ".SH FILES", ".TP", f".I {opt(DEFAULT_CONFIG)}",
            esc("The configuration (a conffile of the package)."),
            ".TP", ".I /run/hadirector/",
            esc("state.json and control.sock (node.state_dir; the unit's RuntimeDirectory)."),
            ".TP", ".I /lib/systemd/system/hadirector.service", esc("The systemd unit."),
            ".TP", ".I /usr/share/doc/hadirector/", esc("README.md, example configurations, copyright."),
            ".SH SEE ALSO",
            ".BR hadirector.yaml (5),", ".BR keepalived (8),", ".BR ipvsadm (8),",
            ".BR systemctl (1),", ".BR journalctl (1)"]
    return "\n".join(line for line in out if line != "") + "\n"


# --- hadirector.yaml(5) -------------------------------------------------------------------


def record_name(spec: Record) -> str:
    return spec.cls.__name__ if spec.cls is not None else "Config"


def _nested(conv: Any) -> Record | None:
    """The record a converter holds, through lists and optionals."""
    while conv is not None:
        if getattr(conv, "spec", None) is not None:
            return conv.spec
        conv = getattr(conv, "item", None) or getattr(conv, "inner", None)
    return None


def sections() -> list[tuple[str, Record, str | None]]:
    """(path, record, same_as) for every record reachable from the top, in file order;
    ``same_as`` names the path where an identical set of keys is described already."""
    out: list[tuple[str, Record, str | None]] = []
    done: list[tuple[Record, str]] = []

    def walk(path: str, spec: Record) -> None:
        for prev, prev_path in done:
            keys, prev_keys = set(spec.by_key), set(prev.by_key)
            if prev is spec or (prev.cls is spec.cls and keys <= prev_keys):
                out.append((path, spec, prev_path))
                return
        done.append((spec, path))
        out.append((path, spec, None))
        for f in spec.fields:
            sub = _nested(f.conv)
            if sub is not None:
                many = getattr(f.conv, "item", None) is not None
                walk(f"{path}.{f.key}" if path else f.key, sub) if not many else \
                    walk((f"{path}.{f.key}" if path else f.key) + "[]", sub)

    walk("", L.CONFIG)
    return out


def _show(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if dataclasses.is_dataclass(value):
        return "(all defaults)"
    return str(value)


def default_of(spec: Record, key: str) -> str:
    f = spec.by_key[key]
    doc = f.doc
    if doc is not None and doc.default is not None:
        return doc.default
    if f.required:
        return "required"
    if spec.cls is None:
        cls_fields = {x.name: x for x in dataclasses.fields(m.Config)}
    else:
        cls_fields = {}
        for cls in (*_MORE_DEFAULTS.get(spec.cls, ()), spec.cls):
            cls_fields.update({x.name: x for x in dataclasses.fields(cls)})
    attr = f.attr or f.key
    field = cls_fields.get(attr)
    if field is None:
        raise LookupError(f"{record_name(spec)}.{key}: no model default; give its doc=K(...) a default=")
    if field.default is not dataclasses.MISSING:
        return _show(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return _show(field.default_factory())
    raise LookupError(f"{record_name(spec)}.{key}: no model default; give its doc=K(...) a default=")


def type_of(spec: Record, key: str) -> str:
    doc = spec.by_key[key].doc
    if doc is not None and doc.type is not None:
        return doc.type
    text = getattr(spec.by_key[key].conv, "doc", None)
    if text is None:
        raise LookupError(f"{record_name(spec)}.{key}: its converter does not describe itself; "
                          "use fields.described() or declare one in its doc=K(..., type=...)")
    return text


def key_doc(spec: Record, key: str) -> KeyDoc:
    doc = spec.by_key[key].doc
    if doc is None:
        raise LookupError(f"{record_name(spec)}.{key}: no words; give its F(...) line a doc=K(...)")
    return doc


def config_page() -> str:
    out = _header("hadirector.yaml", 5, "File Formats")
    out += [".SH NAME", "hadirector.yaml \\- configuration of the hadirector director agent",
            ".SH SYNOPSIS", f".I {opt(DEFAULT_CONFIG)}",
            ".SH DESCRIPTION",
            esc("One YAML file per director. hadirector check -c FILE validates it (as keepalived -t "
                "does); every problem is reported as file:line:column: key.path: message, and a "
                "running agent keeps its old configuration when a reload finds one."),
            ".PP",
            esc('Durations are seconds, written as a number (2.5) or with units ("100ms", "2.5s", '
                '"1m", "1h"). Commands are an argument list, or a string split like a shell would '
                "split it but never run by one. Numbers and booleans must not be quoted, and names "
                "that YAML would read as a number or a boolean must be. Top-level keys starting "
                "with x- are ignored: a home for YAML anchors (<<: *anchor merges a mapping)."),
            ".PP",
            esc("Each key below shows its type and range, its default, and the keepalived.conf "
                "keyword that does the same (hadirector import-keepalived converts a "
                "keepalived.conf)."),
            ".SH KEYS"]
    for path, spec, same_as in sections():
        title = path or "top level"
        if same_as is not None:
            out += [f".SS {esc(title)}", esc(f"The keys of {same_as}" +
                                             ("." if set(spec.by_key) == set(_spec_at(same_as).by_key)
                                              else ", except " + ", ".join(
                                                  sorted(set(_spec_at(same_as).by_key) - set(spec.by_key)))
                                              + "."))]
            continue
        out += [f".SS {esc(title)}"]
        own_doc = spec.cls.__doc__ if spec.cls is not None else None
        if own_doc and not own_doc.startswith(spec.cls.__name__ + "("):   # not dataclass's generated one
            out += [esc(" ".join(own_doc.split()))]
        for f in spec.fields:
            doc = key_doc(spec, f.key)
            kind = type_of(spec, f.key)
            if _nested(f.conv) is not None:
                many = getattr(f.conv, "item", None) is not None
                kind += f" (see {(f'{path}.{f.key}' if path else f.key) + ('[]' if many else '')})"
            out += [".TP", f"\\fB{opt(f.key)}\\fR", esc(doc.text),
                    ".RS", ".PD 0",
                    ".TP 12", "type", esc(kind),
                    ".TP 12", "default", esc(default_of(spec, f.key)),
                    ".TP 12", "keepalived", esc(doc.keepalived or "none"),
                    ".PD", ".RE"]
    out += [".SH EXAMPLE",
            esc("/etc/hadirector/hadirector.yaml as installed is a commented single-node example; "
                "/usr/share/doc/hadirector/examples/ holds a primary/backup pair."),
            ".SH SEE ALSO", ".BR hadirector (8),", ".BR keepalived.conf (5),", ".BR ipvsadm (8)"]
    return "\n".join(out) + "\n"


def _spec_at(path: str) -> Record:
    return next(spec for p, spec, same in sections() if p == path and same is None)


def every_key() -> Iterator[tuple[str, Record, str]]:
    """(section path, record, key) for every key the page describes."""
    for path, spec, same_as in sections():
        if same_as is None:
            for f in spec.fields:
                yield path, spec, f.key


def write(outdir: str | Path) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pages = [(outdir / "hadirector.8", cli_page()), (outdir / "hadirector.yaml.5", config_page())]
    for path, text in pages:
        path.write_text(text)
    return [p for p, _ in pages]


if __name__ == "__main__":
    for page in write(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(page)
