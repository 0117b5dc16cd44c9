"""Signatures over the plan. spec: grc-based-routing §Security Considerations
(routing table updates and ephemeris data SHOULD be cryptographically signed).

Ed25519 (``cryptography``). A key pair is made per plan; the public key is
stored in the route database, the private key is discarded unless the caller
keeps it (written with mode 0600). Each slice is signed through a manifest:
the SHA-256 digest of every satellite's table plus the digests of the slice's
links, attachments, GS choices and bindings. Whole tables outside the slices
(ephemeris, mapping, the static rows, the satellite -> core associations of
every policy) are signed as one digest each in the ``signatures`` table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from emu.plan.routing import SliceTables

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


def table_digest(prefix: np.ndarray, plen: np.ndarray, action: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prefix, dtype="<u4").tobytes())
    h.update(np.ascontiguousarray(plen, dtype="u1").tobytes())
    h.update(np.ascontiguousarray(action, dtype="<i8").tobytes())
    return h.digest()


def table_digests(tables: SliceTables) -> list[bytes]:
    return [table_digest(*tables.of(s)) for s in range(len(tables.offsets) - 1)]


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
