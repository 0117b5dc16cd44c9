"""Signatures over the plan. spec: grc-based-routing §Security Considerations
(routing table updates and ephemeris data SHOULD be cryptographically signed).

Ed25519 (``cryptography``). Plans are signed with the ground control unit's
persistent key (:mod:`emu.plan.trust` says which keys are trusted); the signer's
public key is stored in the route database.

Two layers:

- The *seal* (:func:`seal`, :func:`check_seal`) covers every row of every
  table of the database and its schema: one SHA-256 per table over its rows in
  a canonical order and encoding, all of them in one signed manifest. A table
  added later is covered by construction; a table, row, trigger or view that
  is added, removed or changed is found and named.
  The satellite -> core associations of every policy are one such table.
- Each slice also carries a signed manifest of per-satellite table digests, so
  a changed entry is traced to its satellite (``leo-emu verify``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from emu.plan.digest import digests, rows_digest
from emu.plan.routing import SliceTables

log = logging.getLogger(__name__)

DIGEST = 32


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


_COLUMNS = ("<u4", "u1", "<i8")  # a table's digest covers its prefix, plen and action columns in these layouts
# (table_digests slices them by these widths: 4, 1, 8)


def _column_bytes(prefix: np.ndarray, plen: np.ndarray, action: np.ndarray) -> list[memoryview]:
    return [memoryview(np.ascontiguousarray(c, dtype=t)).cast("B") for c, t in zip((prefix, plen, action), _COLUMNS)]


def _digest(*parts) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def table_digest(prefix: np.ndarray, plen: np.ndarray, action: np.ndarray) -> bytes:
    return _digest(*_column_bytes(prefix, plen, action))


def table_digests(tables: SliceTables) -> list[bytes]:
    """:func:`table_digest` of every satellite's table (the columns' bytes taken once, then sliced; one plain
    loop: 1,584 tables of a shell-1 slice in ~2.8 ms, most of it SHA-256 itself)."""
    off = np.asarray(tables.offsets).tolist()
    prefix, plen, action = _column_bytes(tables.prefix, tables.plen, tables.action)
    sha256 = hashlib.sha256
    out = []
    for a, b in zip(off[:-1], off[1:]):
        h = sha256(prefix[4 * a:4 * b])
        h.update(plen[a:b])
        h.update(action[8 * a:8 * b])
        out.append(h.digest())
    return out


def blob_digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def slice_message(scenario_digest: str, k: int, manifest: bytes) -> bytes:
    return b"leo-emu slice\0" + scenario_digest.encode() + k.to_bytes(4, "little") + manifest


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def check(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------------------- the seal over every table
SEAL = "plan"  # the signatures table's one row
SEAL_MAGIC = b"leo-emu plan seal v1\0"


def database_digests(con: sqlite3.Connection, path: Path | None = None, known: dict[str, str] | None = None) -> dict:
    """``{"schema": digest, "tables": {name: digest}}`` over everything in the file but the seal itself.

    With ``path`` (the file ``con`` reads, everything in it committed) the tables are digested by forked
    workers, each with its own read-only connection, largest first. ``known``: digests of tables already
    taken (:func:`table_digest_of`) and not written since, which are not read again."""
    known = known or {}
    schema = list(con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"))
    names = sorted(r[1] for r in schema if r[0] == "table" and r[1] != "signatures")
    got = _table_digests(con, [n for n in names if n not in known], path)
    return {"schema": hashlib.sha256(repr(schema).encode()).hexdigest(),
            "tables": {n: known[n] if n in known else got[n] for n in names}}


def table_digest_of(con: sqlite3.Connection, table: str) -> str:
    """One table's digest as the seal takes it (for ``seal(known=...)``: a table that is complete early)."""
    return rows_digest(con, table)


def _table_digests(con: sqlite3.Connection, names: list[str], path: Path | None) -> dict[str, str]:
    """Every table's digest; for a large plan in a committed file (``path``), by workers, largest tables first.

    A single-threaded process forks them. A process with other threads (a Ray actor, the plan writer's, or
    just numpy's BLAS pool) starts fresh interpreters instead (``python -I emu/plan/digest.py``): a child forked
    while another thread holds a lock can hang on it, and ``multiprocessing``'s forkserver and spawn import
    the caller's ``__main__`` again in each worker. A worker that dies or fails costs only time: the digests
    are then taken here, in this process."""
    workers = min(os.cpu_count() or 1, 4)
    if path is None or workers < 2 or len(names) < 2:
        return {n: rows_digest(con, n) for n in names}
    from urllib.parse import quote

    size = {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    size["slices"] = size.get("slices", 0) * 2000  # a row of blobs weighs as much as thousands of small rows
    if sum(size.values()) < 200_000:  # small plans: forking costs more than it saves
        return {n: rows_digest(con, n) for n in names}
    uri = f"file:{quote(str(path))}?mode=ro"
    order = sorted(names, key=lambda n: -size[n])
    try:
        got = _forked(uri, order, workers) if _os_threads() == 1 else _interpreters(uri, order, size, workers)
    except Exception as exc:  # noqa: BLE001 -- a broken worker pool: the same digests, taken here
        log.warning("plan digests: workers failed (%s); taking them in this process", exc)
        got = {n: rows_digest(con, n) for n in names}
    return {n: got[n] for n in names}


def _forked(uri: str, order: list[str], workers: int) -> dict[str, str]:
    """Digests by forked workers (a single-threaded caller only); a worker that dies breaks the pool, which
    raises instead of waiting for it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
        return dict(ex.map(_worker_digest, [(uri, n) for n in order]))


def _interpreters(uri: str, order: list[str], size: dict[str, int], workers: int) -> dict[str, str]:
    """Digests by fresh interpreters, the tables dealt largest first to the least loaded. Each runs the file
    of :mod:`emu.plan.digest` beside this one (stdlib only) in isolated mode (``-I``): not an ``emu`` that the
    working directory or PYTHONPATH would put first on ``-m``'s path (another checkout's digests, silently).
    Children still running when this returns or raises (Ctrl-C, a failed start) are killed and reaped."""
    import subprocess
    import sys

    bins: list[list[str]] = [[] for _ in range(workers)]
    load = [0] * workers
    for n in order:
        i = load.index(min(load))
        bins[i].append(n)
        load[i] += size[n]
    script = str(Path(__file__).resolve().with_name("digest.py"))
    procs: list[subprocess.Popen] = []
    try:
        for b in bins:
            if b:
                procs.append(subprocess.Popen([sys.executable, "-I", script, uri, *b], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
        got: dict[str, str] = {}
        failed = None
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                failed = failed or f"exit {p.returncode}: {err.decode(errors='replace').strip()[-200:]}"
            else:
                got.update(json.loads(out))
        if failed:
            raise RuntimeError(failed)
        return got
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _os_threads() -> int:
    """Threads of this process as the kernel counts them (native ones too, which ``threading`` does not see)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # unknown: as if threaded


def _worker_digest(job: tuple[str, str]) -> tuple[str, str]:
    uri, name = job
    return name, digests(uri, [name])[name]


def seal(con: sqlite3.Connection, key: Ed25519PrivateKey, path: Path | None = None,
         known: dict[str, str] | None = None) -> None:
    """Sign every table as it is now: the last write to a plan (``path``: the file, everything in it
    committed, so forked workers can digest the tables; ``known``: see :func:`database_digests`)."""
    manifest = json.dumps(database_digests(con, path, known), sort_keys=True).encode()
    con.execute("DELETE FROM signatures")
    con.execute("INSERT INTO signatures VALUES (?, ?, ?)", (SEAL, manifest, sign(key, SEAL_MAGIC + manifest)))


def check_seal(con: sqlite3.Connection, public: bytes, path: Path | None = None) -> list[str]:
    """What does not match the seal signed by ``public`` (empty: every row of every table is as signed)."""
    rows = list(con.execute("SELECT what, digest, signature FROM signatures"))
    seals = [r for r in rows if r[0] == SEAL]
    if not seals:
        return ["signature: the plan carries no seal over its tables"]
    _, manifest, signature = seals[0]
    problems = [f"signatures: unexpected row {r[0]!r}" for r in rows if r[0] != SEAL]
    if not isinstance(manifest, bytes) or not isinstance(signature, bytes) \
            or not check(public, signature, SEAL_MAGIC + manifest):
        return ["signature: the seal over the tables does not verify with the plan's public key"] + problems
    signed = json.loads(manifest)
    now = database_digests(con, path)
    if now["schema"] != signed["schema"]:
        problems.append("schema: tables, indexes, triggers or views differ from the signed schema")
    for name in sorted(set(now["tables"]) | set(signed["tables"])):
        if name not in signed["tables"]:
            problems.append(f"table {name}: not covered by the signature")
        elif name not in now["tables"]:
            problems.append(f"table {name}: missing")
        elif now["tables"][name] != signed["tables"][name]:
            problems.append(f"table {name}: rows do not match the signed digest")
    return problems
