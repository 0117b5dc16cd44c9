"""One plan table's digest (the seal's unit: :mod:`emu.plan.sign`), and a worker taking digests in a fresh
interpreter: ``python -I .../emu/plan/digest.py URI TABLE...`` prints ``{table: digest}`` as one JSON object
(the file itself, in isolated mode: never an ``emu`` that the working directory would put first).

Only the standard library is imported here, so a worker starts in ~50 ms. The seal uses such workers when
its own process has other threads (a forked child could hang on a lock another thread held) -- not
``multiprocessing``'s forkserver or spawn, which import the caller's ``__main__`` again in every worker: a
researcher's script without an ``if __name__ == "__main__":`` guard would run again there (and the pool
would wait forever for workers that die of it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys


def rows_digest(con: sqlite3.Connection, table: str) -> str:
    """SHA-256 of a table: its name and columns, then every row in column order (rows sorted by every
    column), as the ``repr`` of 4096-row chunks; a declared BLOB column's bytes enter as their own
    SHA-256 and length (a tuple, which no SQLite value can be), so blobs are hashed, not repr'd."""
    info = list(con.execute(f'PRAGMA table_info("{table}")'))
    cols = [r[1] for r in info]
    blobs = [i for i, r in enumerate(info) if str(r[2]).upper() == "BLOB"]
    h = hashlib.sha256(json.dumps([table, cols]).encode())
    order = ", ".join(str(i + 1) for i in range(len(cols)))
    cur = con.execute(f'SELECT * FROM "{table}" ORDER BY {order}')
    while True:
        rows = cur.fetchmany(4096)
        if not rows:
            break
        if blobs:
            rows = [tuple(("blob", len(v), hashlib.sha256(v).hexdigest()) if i in blobs and isinstance(v, bytes)
                          else v for i, v in enumerate(row)) for row in rows]
        h.update(repr(rows).encode())
    return h.hexdigest()


def digests(uri: str, names: list[str]) -> dict[str, str]:
    """Each table's :func:`rows_digest`, read through its own connection to ``uri`` (a worker's)."""
    con = sqlite3.connect(uri, uri=True)
    try:
        return {name: rows_digest(con, name) for name in names}
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -I digest.py URI TABLE...", file=sys.stderr)
        return 2
    print(json.dumps(digests(args[0], args[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
