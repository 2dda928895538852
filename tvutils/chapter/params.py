"""Notebook parameter profiles: the defaults are the book's run; ``profile="ci"`` picks a small, fast run.

A notebook's papermill ``parameters`` cell sets ``profile`` and ``overrides``; the notebook then calls
``resolve(DEFAULTS, profile, PROFILES, overrides)``, so that one switch selects a profile (``PROFILES`` maps
each profile a chapter offers to the parameters it changes) and an unknown profile or parameter name is an
error, not a silent no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

PROFILES = ("default", "ci", "full")


def resolve(
    defaults: Mapping[str, Any],
    profile: str,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SimpleNamespace:
    """defaults ← the profile's values ← explicit overrides; every name must be a known parameter."""
    profiles = profiles or {}
    if profile != "default" and profile not in profiles:
        known = ["default", *profiles]
        raise ValueError(f"unknown profile {profile!r}; this notebook knows {known}")
    merged = dict(defaults)
    for source, values in ((f"profile {profile!r}", profiles.get(profile, {})), ("overrides", overrides or {})):
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} in {source}; known: {sorted(defaults)}")
        merged.update(values)
    merged["profile"] = profile
    return SimpleNamespace(**merged)
