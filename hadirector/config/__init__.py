"""YAML config file -> validated ``hadirector.model.Config`` (errors carry file:line:key)."""

from .errors import ConfigError, ConfigIssue
from .loader import Loaded, load, load_config, parse, parse_config

__all__ = ["ConfigError", "ConfigIssue", "Loaded", "load", "load_config", "parse", "parse_config"]
