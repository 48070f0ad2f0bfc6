"""Tests written to kill the mutants ``nox -s mutants`` found alive (docs/development.md lists
the ones that are equivalent, with the reason)."""

from __future__ import annotations
