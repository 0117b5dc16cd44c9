"""Segmented longest match: the pure-Python reference lookup.

spec: grc-based-routing §Segmented Longest Match. Only the prefix lengths of
the GRC hierarchy are legal (11, 14, 17, 20, 23, 26, 29, 32). A lookup tries
them from the longest (most specific) to the shortest, with one dict per
length, so it costs at most eight dict probes. The kernel's FIB must agree
with this table; tests compare the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.errors import AddressingError

_LENGTHS_DESC = tuple(sorted(LEGAL_PREFIX_LENGTHS, reverse=True))
_MASKS = {plen: (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF for plen in LEGAL_PREFIX_LENGTHS}


class SegmentedTable:
    """A routing table keyed by (prefix, plen) with segmented longest match."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[int, Any]] = {plen: {} for plen in LEGAL_PREFIX_LENGTHS}

    def insert(self, prefix: int, plen: int, value: Any) -> None:
        """Add or replace the entry for ``prefix/plen``."""
        _check_prefix(prefix, plen)
        self._by_len[plen][prefix] = value

    def delete(self, prefix: int, plen: int) -> None:
        """Remove the entry for ``prefix/plen``; KeyError if there is none."""
        _check_prefix(prefix, plen)
        try:
            del self._by_len[plen][prefix]
        except KeyError:
            raise KeyError((prefix, plen)) from None

    def get(self, prefix: int, plen: int, default: Any = None) -> Any:
        """The value stored for exactly ``prefix/plen`` (no longest match)."""
        _check_prefix(prefix, plen)
        return self._by_len[plen].get(prefix, default)

    def lookup(self, addr: int) -> tuple[int, int, Any] | None:
        """(prefix, plen, value) of the most specific entry holding ``addr``, or None."""
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 0xFFFFFFFF:
            raise AddressingError(f"addr: must be 0..0xffffffff (got {addr!r})")
        for plen in _LENGTHS_DESC:
            table = self._by_len[plen]
            if table:
                prefix = addr & _MASKS[plen]
                if prefix in table:
                    return prefix, plen, table[prefix]
        return None

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        prefix, plen = key
        return plen in self._by_len and prefix in self._by_len[plen]

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_len.values())

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        """Every entry as (prefix, plen, value), by prefix then length."""
        entries = [(p, plen, v) for plen, t in self._by_len.items() for p, v in t.items()]
        entries.sort(key=lambda e: (e[0], e[1]))
        return iter(entries)

    def __repr__(self) -> str:
        return f"SegmentedTable({len(self)} entries)"


def _check_prefix(prefix: int, plen: int) -> None:
    if plen not in _MASKS or isinstance(plen, bool):
        raise AddressingError(f"plen: must be one of {', '.join(map(str, LEGAL_PREFIX_LENGTHS))} (got {plen!r})")
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= 0xFFFFFFFF:
        raise AddressingError(f"prefix: must be 0..0xffffffff (got {prefix!r})")
    if prefix & ~_MASKS[plen] & 0xFFFFFFFF:
        raise AddressingError(f"prefix: host bits set for /{plen} (got {prefix:#010x}/{plen})")
