"""Errors a user can cause and fix; the command line prints them as one line, no traceback."""

import errno


class CnnjaxError(Exception):
    """Base class: the message names the thing that is wrong and how to fix it."""


class ConfigError(CnnjaxError, ValueError):
    """A config field is unknown or holds a value outside its valid choices."""


class DataError(CnnjaxError, ValueError):
    """The data is missing or not in the expected layout."""


# What a user does when writing fails with this errno (no permission, a read-only file
# system, a full disk or quota); other OS errors are not theirs to fix.
WRITE_FIXES = {errno.EACCES: "make it writable", errno.EPERM: "make it writable",
               errno.EROFS: "make it writable", errno.ENOSPC: "free space on its disk",
               errno.EDQUOT: "free space on its disk"}
