"""``hadirector import-keepalived``: keepalived.conf -> hadirector YAML (see ``convert``)."""

from .convert import (
    Conversion, KeepalivedSyntaxError, Note, Severity, Where, add_arguments_import, cmd_import,
    convert_file, convert_text, shell_for,
)

__all__ = [
    "Conversion", "KeepalivedSyntaxError", "Note", "Severity", "Where", "convert_text",
    "convert_file", "shell_for",
    "add_arguments_import", "cmd_import",
]
