"""Exceptions that the CLI turns into one line on stderr and exit code 2."""


class HJBError(Exception):
    """Base class of every user-facing error: bad input, bad case, unwritable output."""


class CaseError(HJBError):
    """A case file (or case dict) is invalid. The message names the file and the key."""


class ExpressionError(HJBError):
    """A formula does not parse or uses a construct outside the whitelisted language."""


class NumericalError(HJBError):
    """A computation produced NaN/inf or an iteration failed to converge."""
