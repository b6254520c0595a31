"""Convert a keepalived.conf into hadirector YAML (``hadirector import-keepalived``).

Theory of operation: three small passes, each with one job.

1. **Lexer** (``lex.Lexer``): reads the file and everything it ``include``s, drops
   comments as keepalived does, and yields tokens that each know their file:line.
2. **Parser** (``lex.parse``): tokens -> a tree of ``Stmt(words, where, block)``.
3. **Converter** (``Converter``): walks the tree with keepalived's *effective*
   defaults (not ours). Each block is read with a flat keyword -> handler table, as
   keepalived's own parser does (vrrp_parser.c ``init_vrrp_keywords``): ``vrrp.py``
   has those of global_defs, vrrp_script, vrrp_instance and vrrp_sync_group,
   ``lvs.py`` those of virtual_server, real_server, each checker and url. The result is
   a plain dict whose keys are the field names of
   ``hadirector.model`` (see its docstring), plus a list of ``Note``s, each with a
   ``Severity``: ``info`` (converted to the equivalent, e.g. a keepalived rule
   applied), ``changed`` (hadirector behaves differently) or ``lost`` (not converted).
   ``import-keepalived`` exits ``CONVERSION_LOST`` when anything is lost, unless
   ``--allow-loss``.

A file keepalived would not read as written -- an unbalanced brace (a file cut short),
an ``include`` of a file that does not exist, an include loop -- raises
``KeepalivedSyntaxError`` naming file:line: it never converts into a smaller config.

The output spells out keepalived's defaults wherever they differ from hadirector's,
so the converted director behaves like the keepalived it replaces:

* VRRP version 2 for IPv4 instances unless ``vrrp_version``/``version`` says 3 (IPv6
  instances default to 3) -- a pair can be migrated one node at a time.
* A ``state MASTER`` instance without ``priority`` gets 255 (keepalived's rule in
  ``vrrp_complete_instance``); ``accept_mode`` is on unless ``vrrp_strict``/``no_accept``.
* Checkers: ``delay_loop`` 60 s, ``connect_timeout`` 5 s, ``rise`` 1 (one success
  brings a server up) and ``fall = retry + 1``: keepalived declares a server down only
  after the first failure *and* ``retry`` retries ``delay_before_retry`` apart
  (``tcp_epilog`` in check_tcp.c), which is what ``fall`` + ``retry_delay`` model.
  Default ``retry`` is 1 (TCP/HTTP) or 0 (MISC); default ``delay_before_retry`` is 3 s
  for HTTP/SSL_GET and 1 s otherwise. HTTP status codes default to 200-299.
* SSL_GET does not verify the server certificate in keepalived: ``verify_tls: false``.
* keepalived removes the virtual servers it created when it stops, so
  ``lvs.on_shutdown: remove``; it programs IPVS on both nodes: ``lvs.program: always``.

* ``nopreempt`` and ``preempt_delay`` as keepalived really runs them (both cleared
  for an initial state MASTER, nopreempt at priority 255, preempt_delay with nopreempt
  or strict mode).
* The router_id names one node: ``--router-id``, else global_defs', else left out so
  that each director uses its own host name at run time (never the converting host's).
* A command keepalived hands to ``system()`` (``</...``) or one with shell syntax runs
  under ``/bin/bash -c`` when it uses bash syntax (``</dev/tcp/...``): /bin/sh is dash
  on Debian.

Deliberate differences: a real server without ``alpha`` starts *up* in keepalived;
the converted file leaves ``initial`` at hadirector's default (unknown: programmed
after its first check passes), which avoids sending traffic to a dead server. And
keepalived spreads the first checks over ``delay_loop`` by default (``warmup``);
hadirector starts them at once, and an explicit ``warmup`` becomes ``jitter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from . import lvs, vrrp
from .lex import KeepalivedSyntaxError, Lexer, Note, Severity, Stmt, Token, Where, parse
from .values import Bad, Handler

_EMAIL_KEYWORDS = {
    "notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout",
    "smtp_helo_name", "smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker", "no_email_faults",
}
# Top-level blocks that need a name and a { block }.
_NAMED_BLOCKS = ("vrrp_instance", "vrrp_script", "vrrp_sync_group", "virtual_server_group",
                 "virtual_server")


@dataclass
class Conversion:
    """The result: ``data`` (the YAML document as a dict) and ``notes``."""

    data: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    source: str = "keepalived.conf"

    @property
    def lost(self) -> list[Note]:
        """What was not converted: ``import-keepalived`` fails unless --allow-loss."""
        return [n for n in self.notes if n.severity is Severity.LOST]

    def to_yaml(self) -> str:
        head = [f"# hadirector configuration converted from {self.source}",
                "# by `hadirector import-keepalived`. Review the notes below before use."]
        if self.notes:
            head.append("#")
            head.append("# lost: not converted; changed: behaves differently; info: equivalent")
            head.extend(f"#   {n}" for n in self.notes)
        body = yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None, width=100)
        return "\n".join(head) + "\n\n" + body



class Converter:
    """One conversion: the globals of global_defs, what has been converted so far, and
    the notes. The per-block handlers (vrrp.py, lvs.py) read and fill it."""

    def __init__(self, notes: list[Note], router_id: str | None) -> None:
        self.notes = notes
        self.router_id_chosen = router_id     # --router-id: this node's, whatever the file says
        self.router_id: str | None = None
        self.router_id_where: Where | None = None
        self.vrrp_version = 2
        self.strict = False
        self.garp = vrrp.Garp()
        self.sync_daemon: dict[str, Any] | None = None
        self.sync_daemon_where: Where | None = None
        self.scripts: dict[str, dict[str, Any]] = {}
        self.script_copies: dict[str, dict[str, Any]] = {}
        self.instances: list[dict[str, Any]] = []
        self.sync_groups: list[dict[str, Any]] = []
        self.vsgroups: dict[str, list[tuple[Stmt, list[str]]]] = {}
        self.services: list[dict[str, Any]] = []

    # -- notes

    def skip(self, stmt: Stmt, why: str | None = None) -> None:
        """``lost``: the statement is not converted."""
        self.notes.append(Note(stmt.where, why or f"{stmt.keyword} not supported, skipped"))

    def change(self, where: Where | None, message: str) -> None:
        """``changed``: converted, but hadirector behaves differently."""
        self.notes.append(Note(where, message, Severity.CHANGED))

    def info(self, where: Where | None, message: str) -> None:
        """``info``: converted to the equivalent (a keepalived rule or default applied)."""
        self.notes.append(Note(where, message, Severity.INFO))

    def each(self, stmts: Iterable[Stmt], table: dict[str, Handler], block: Any,
             context: str = "") -> None:
        """Run each statement's handler from ``table`` on ``block``; unknown keywords and
        bad values are noted (lost) and the statement is skipped."""
        for s in stmts:
            if not s.words:
                continue
            h = table.get(s.keyword)
            if h is None:
                where = f" in {context}" if context else ""
                if s.keyword in _EMAIL_KEYWORDS:
                    self.skip(s, f"{s.keyword}: e-mail alerts not supported, skipped")
                else:
                    self.skip(s, f"{s.keyword}{where} not supported, skipped")
                continue
            try:
                h(self, block, s)
            except Bad as e:
                self.skip(s, f"{e}; {s.keyword} skipped")

    # -- top level

    def run(self, tree: list[Stmt]) -> dict[str, Any]:
        # Globals first: they are defaults for everything else, wherever they appear.
        for s in tree:
            if s.keyword == "global_defs":
                self.each(s.block or [], vrrp.GLOBAL_DEFS, self, "global_defs")
        instance_stmts: list[Stmt] = []
        vs_stmts: list[Stmt] = []
        for s in tree:
            kw = s.keyword
            if kw == "global_defs":
                continue
            if kw in _NAMED_BLOCKS and (s.block is None or not s.args):
                self.skip(s, f"{kw} needs a name and a {{ block }}, skipped")
                continue
            if kw == "vrrp_script":
                vrrp.script(self, s)
            elif kw == "vrrp_instance":
                instance_stmts.append(s)
            elif kw == "vrrp_sync_group":
                vrrp.sync_group(self, s)
            elif kw == "virtual_server_group":
                lvs.vsgroup(self, s)
            elif kw == "virtual_server":
                vs_stmts.append(s)
            elif kw:
                self.skip(s)
        for s in instance_stmts:
            try:
                self.instances.append(vrrp.instance(self, s))
            except Bad as e:
                self.skip(s, f"vrrp_instance {s.args[0]}: {e}; instance skipped")
        for s in vs_stmts:
            self.services.extend(lvs.virtual_server(self, s))
        self._finish_sync_daemon()
        self._check_references()
        return self._document()

    def _document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        # The router_id names one node: never the converting machine's host name.
        chosen = self.router_id_chosen
        if chosen is not None:
            if self.router_id is not None and self.router_id != chosen:
                self.info(self.router_id_where, f"router_id {self.router_id}: replaced by "
                                                f"--router-id {chosen}")
            doc["node"] = {"router_id": chosen}
        elif self.router_id is not None:
            doc["node"] = {"router_id": self.router_id}
        else:
            self.info(None, "global_defs has no router_id: node.router_id is left out, so each "
                            "director uses its own host name at run time, as keepalived does "
                            "(--router-id NAME sets one)")
        if self.instances:
            doc["vrrp_instances"] = self.instances
        if self.sync_groups:
            doc["sync_groups"] = self.sync_groups
        scripts = list(self.scripts.values()) + list(self.script_copies.values())
        if scripts:
            doc["track_scripts"] = scripts
        if self.services or self.sync_daemon:
            lvs: dict[str, Any] = {"program": "always", "on_shutdown": "remove"}
            if self.sync_daemon:
                lvs["sync_daemon"] = self.sync_daemon
            doc["lvs"] = lvs
        if self.services:
            doc["virtual_services"] = self.services
        return doc

    # -- after every block: keepalived's cross-block rules

    def _finish_sync_daemon(self) -> None:
        """keepalived's syncid defaults to the vrid of the instance the daemon follows."""
        sd = self.sync_daemon
        if sd is None:
            return
        follow = sd.get("follow_instance")
        if follow is None:
            self.change(self.sync_daemon_where, "lvs_sync_daemon follows no VRRP instance: "
                                                "it runs as master and backup all the time")
        elif "syncid" not in sd:
            inst = next((i for i in self.instances if i["name"] == follow), None)
            if inst is not None:
                sd["syncid"] = inst["vrid"]
        ordered = {k: sd[k] for k in ("interface", "syncid", "follow_instance", "mcast_group",
                                      "port", "ttl", "maxlen") if k in sd}
        self.sync_daemon = ordered

    def _check_references(self) -> None:
        inst_names = {i["name"] for i in self.instances}
        for g in self.sync_groups:
            missing = [m for m in g["instances"] if m not in inst_names]
            if missing:
                self.info(None, f"vrrp_sync_group {g['name']}: instance(s) "
                                f"{', '.join(missing)} not defined; removed from the group "
                                f"(keepalived ignores them too)")
                g["instances"] = [m for m in g["instances"] if m in inst_names]
        self.sync_groups = [g for g in self.sync_groups if g["instances"]]
        known = set(self.scripts) | set(self.script_copies)
        for inst in self.instances:
            ts = inst.get("track_scripts")
            if not ts:
                continue
            missing = [t for t in ts if t not in known]
            if missing:
                self.info(None, f"vrrp_instance {inst['name']}: track_script "
                                f"{', '.join(missing)} not defined; removed (keepalived "
                                f"ignores it too)")
                inst["track_scripts"] = [t for t in ts if t in known]
                if not inst["track_scripts"]:
                    del inst["track_scripts"]
        sd = self.sync_daemon
        if sd and sd.get("follow_instance") and sd["follow_instance"] not in inst_names:
            self.change(self.sync_daemon_where, f"lvs_sync_daemon: instance "
                                                f"{sd['follow_instance']} not defined")

# --- entry points ---------------------------------------------------------------------


def convert_text(text: str, source: str = "keepalived.conf", *, base_dir: str = ".",
                 config_id: str | None = None, router_id: str | None = None) -> Conversion:
    """Convert keepalived.conf text. ``source`` names it in notes; ``include``s are
    resolved relative to ``base_dir``. ``router_id`` is this node's (--router-id): it
    replaces global_defs' router_id. Raises ``KeepalivedSyntaxError``."""
    notes: list[Note] = []
    lexer = Lexer(notes, config_id)
    return _convert(lexer, lexer.lex_text(text, source, base_dir), notes, router_id, source)


def convert_file(path: str, *, config_id: str | None = None,
                 router_id: str | None = None, display: str | None = None) -> Conversion:
    """Convert a keepalived.conf file (and whatever it includes). Raises
    ``KeepalivedSyntaxError``, or ``OSError`` when ``path`` cannot be read."""
    notes: list[Note] = []
    lexer = Lexer(notes, config_id)
    shown = display or path
    return _convert(lexer, lexer.lex_file(path, shown), notes, router_id, shown)


def _convert(lexer: Lexer, tokens: list[Token], notes: list[Note], router_id: str | None,
             source: str) -> Conversion:
    errors = lexer.errors
    tree = parse(tokens, notes, errors)
    if not errors and not any(s.words for s in tree):
        # A file emptied or cut to its comments would convert to a director that does
        # nothing, and exit 0.
        errors.append((Where(source, 1), "no keepalived configuration in it (an empty file, "
                                         "or only comments)"))
    if errors:
        raise KeepalivedSyntaxError(errors)
    data = Converter(notes, router_id).run(tree)
    return Conversion(data=data, notes=notes, source=source)

