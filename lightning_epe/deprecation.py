"""Deprecations: names of 0.1 that still work until 0.3, with a warning naming their replacement.

The warnings are :class:`LightningEpeDeprecationWarning` (a ``DeprecationWarning``); the
``lightning-epe`` command always shows them, since recipes (YAML) are a user's, not a library's.
"""
from __future__ import annotations

import warnings


class LightningEpeDeprecationWarning(DeprecationWarning):
    """A name of lightning-epe 0.1 used; it is removed in 0.3."""


def deprecated(message: str, stacklevel: int = 3) -> None:
    """Warn that a 0.1 name was used: ``message`` says what to use instead."""
    warnings.warn(f"{message} (deprecated in 0.2, removed in 0.3)", LightningEpeDeprecationWarning,
                  stacklevel=stacklevel)
