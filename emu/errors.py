"""One exception tree for the whole emulator.

Library code raises these; only the CLI edge turns them into one line on
stderr and an exit code (``exit_code``). Library code never calls ``exit()``.
"""

from __future__ import annotations


class EmuError(Exception):
    """Base of every error the emulator raises on purpose."""

    exit_code = 1


class InputError(EmuError):
    """Bad input from the user: exit code 2."""

    exit_code = 2


MAX_ECHO = 80
"""Longest value echoed in an error message (a hostile file's value can be megabytes)."""


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """A short ``repr`` of ``value`` for error messages: long strings and containers are cut (reprlib),
    with the original length when it was a string."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    r.maxlevel = 3
    text = r.repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(value, (str, bytes)) and len(value) > limit:
        text += f" ({len(value)} characters)"
    return text


def cut(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ScenarioError(InputError):
    """A scenario file is invalid. ``field`` is a dotted path, ``value`` the offending value."""

    def __init__(self, message: str, field: str | None = None, value: object = None):
        self.field = field
        self.value = value
        if field is not None:
            message = f"{field}: {message} (got {echo(value)})"
        super().__init__(message)


class AddressingError(InputError):
    """An address, index or code that cannot be encoded or decoded."""


class PlanError(EmuError):
    """A plan cannot be computed, read or trusted."""


class PlanInputError(PlanError, InputError):
    """A plan file that cannot be read, or is not trusted: bad input (exit code 2)."""


class VerifyError(PlanError):
    """A plan failed verification (bad signature, loop, black hole)."""


class PrivilegeError(EmuError):
    """The command needs root (CAP_NET_ADMIN) and does not have it."""

    exit_code = 77


class DataplaneError(EmuError):
    """A kernel operation failed: ``op`` what was tried, ``netns`` where, ``errno`` the kernel's answer."""

    def __init__(self, op: str, netns: str | None = None, errno: int | None = None, detail: str = ""):
        self.op = op
        self.netns = netns
        self.errno = errno
        self.detail = detail
        where = f" in netns {netns}" if netns else ""
        code = f" (errno {errno})" if errno is not None else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"{op}{where} failed{code}{extra}")
