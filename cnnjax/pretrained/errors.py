"""The one error type of weight loading, so callers can catch it apart from bugs."""

from __future__ import annotations

from cnnjax.errors import CnnjaxError


class WeightsError(CnnjaxError, ValueError):
    """A weights file is missing, unreadable, unsafe, or does not fit the model."""
