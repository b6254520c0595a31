"""YAML config file -> validated ``hadirector.model.Config`` (errors carry file:line:key)."""

from .errors import ConfigError, ConfigIssue
from .loader import load_config, parse_config

__all__ = ["ConfigError", "ConfigIssue", "load_config", "parse_config"]
