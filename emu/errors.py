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


class ScenarioError(InputError):
    """A scenario file is invalid. ``field`` is a dotted path, ``value`` the offending value."""

    def __init__(self, message: str, field: str | None = None, value: object = None):
        self.field = field
        self.value = value
        if field is not None:
            message = f"{field}: {message} (got {value!r})"
        super().__init__(message)


class AddressingError(InputError):
    """An address, index or code that cannot be encoded or decoded."""


class PlanError(EmuError):
    """A plan cannot be computed, read or trusted."""


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
        where = f" in netns {netns}" if netns else ""
        code = f" (errno {errno})" if errno is not None else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"{op}{where} failed{code}{extra}")
