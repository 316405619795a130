"""Errors a user can cause and fix; the command line prints them as one line, no traceback."""


class CnnjaxError(Exception):
    """Base class: the message names the thing that is wrong and how to fix it."""


class ConfigError(CnnjaxError, ValueError):
    """A config field is unknown or holds a value outside its valid choices."""


class DataError(CnnjaxError, ValueError):
    """The data is missing or not in the expected layout."""
