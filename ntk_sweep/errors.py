"""The app's one-line errors, in a module of their own so that the tracking layer (and the
aggregate through it) can raise them without importing the config schema and OmegaConf."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration. `str(err)` is one line naming the field and what is allowed."""


class TrackingError(ConfigError):
    """The tracking store is malformed, unreachable or unwritable (one line)."""
