"""Benchmarks that print tables, keepalived measured beside hadirector. Run each from
the repository root as ``.venv/bin/python -m bench.NAME`` (see README.md here): they
import the lab library (``lab/``) and this tree's hadirector from there."""
