"""``hadirector import-keepalived``: keepalived.conf -> hadirector YAML.

``lex`` reads keepalived's syntax (includes, comments, blocks, file:line), ``convert``
walks the tree, ``vrrp`` and ``lvs`` hold one keyword -> handler table per block,
``values`` reads numbers, addresses and commands, ``cli`` is the command. The theory
of operation, and the keepalived rules the converter applies, are in ``convert``.
"""

from .cli import add_arguments_import, cmd_import
from .convert import Conversion, convert_file, convert_text
from .lex import KeepalivedSyntaxError, Note, Severity, Where
from .values import shell_for

__all__ = [
    "Conversion", "KeepalivedSyntaxError", "Note", "Severity", "Where", "convert_text",
    "convert_file", "shell_for",
    "add_arguments_import", "cmd_import",
]
