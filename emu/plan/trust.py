"""Which keys may sign a plan, and the quick check a plan passes before ``up`` builds anything.

spec: grc-based-routing §Security Considerations: routing table updates and
ephemeris data SHOULD be cryptographically signed by the constellation
operator; only authorized ground control stations SHOULD be able to modify
routing databases.

The ground control unit has one persistent Ed25519 key: ``$LEOEMU_GC_KEY``,
default ``/var/lib/leo-emu/ground-control.key`` (created, mode 0600, the first
time ``plan`` needs it; its public half beside it as ``.pub``). ``plan`` signs
with it unless given ``--key``. ``up`` trusts it plus every key given with
``--trust`` and refuses a plan signed by any other key, before anything is
created. ``leo-emu keygen PATH`` makes more key pairs (a second ground station).

Key files: the private key is PKCS#8 PEM (mode 0600); the public key file
(``PATH.pub``) is one line, the raw 32-byte key in hex, as the plan stores it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from emu.errors import InputError, PlanInputError, echo
from emu.plan import sign as signmod

GC_KEY_ENV = "LEOEMU_GC_KEY"
DEFAULT_GC_KEY = "/var/lib/leo-emu/ground-control.key"
MAX_KEY_FILE = 64 * 1024


def ground_control_key_path() -> Path:
    return Path(os.environ.get(GC_KEY_ENV) or DEFAULT_GC_KEY)


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def fingerprint(public: bytes) -> str:
    """A short name for a public key in messages: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def keygen(path: str | Path, force: bool = False, field: str = "PATH") -> tuple[Path, Path]:
    """Write a new key pair: ``path`` (private, 0600) and ``path.pub``; refuses to replace one unless ``force``."""
    priv = Path(path)
    pub = public_path(priv)
    if not force:
        for p in (priv, pub):
            if p.exists():
                raise InputError(f"{field}: a key already exists there; give --force to replace it (got {echo(str(p))})")
    if not priv.parent.is_dir():
        raise InputError(f"{field}: no such folder (got {echo(str(priv.parent))})")
    key = signmod.new_key()
    try:
        signmod.write_private_key(key, priv)
        pub.write_text(signmod.public_bytes(key).hex() + "\n")
    except OSError as exc:
        raise InputError(f"{field}: cannot write the key: {exc.strerror} (got {echo(str(priv))})") from None
    return priv, pub


def load_private_key(path: str | Path, field: str = "--key") -> Ed25519PrivateKey:
    data = _read_small(Path(path), field)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{field}: not an unencrypted PEM private key ({_first_line(exc)}) (got {echo(str(path))})") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{field}: not an Ed25519 key (got {echo(str(path))})")
    return key


def load_public_key(text: str, field: str = "--trust") -> bytes:
    """A public key given as 64 hex digits, or the path of a ``.pub`` file (hex) or a PEM public key."""
    candidate = text.strip()
    if len(candidate) == 64 and all(c in "0123456789abcdefABCDEF" for c in candidate):
        return bytes.fromhex(candidate)
    p = Path(text)
    if not p.is_file():
        raise InputError(f"{field}: neither 64 hex digits nor a public key file (got {echo(text)})")
    data = _read_small(p, field)
    stripped = data.strip()
    try:
        if len(stripped) == 64:
            return bytes.fromhex(stripped.decode("ascii"))
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InputError(f"{field}: not a public key file (hex or PEM) (got {echo(text)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{field}: not an Ed25519 public key (got {echo(text)})")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ground_control_key(create: bool = True) -> Ed25519PrivateKey | None:
    """The machine's ground-control key, made on first use when ``create``."""
    path = ground_control_key_path()
    if path.exists():
        return load_private_key(path, field=f"ground-control key (${GC_KEY_ENV})")
    if not create:
        return None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"ground-control key: cannot create its folder: {exc.strerror}; run as root, set "
                         f"${GC_KEY_ENV} or give --key (got {echo(str(path.parent))})") from None
    keygen(path, field=f"ground-control key (${GC_KEY_ENV})")
    return load_private_key(path, field=f"ground-control key (${GC_KEY_ENV})")


def ground_control_public() -> bytes | None:
    """The ground-control public key, from its ``.pub`` file or its private key; None when there is none yet."""
    path = ground_control_key_path()
    pub = public_path(path)
    if pub.is_file():
        return load_public_key(str(pub), field=f"ground-control key (${GC_KEY_ENV})")
    key = ground_control_key(create=False)
    return None if key is None else signmod.public_bytes(key)


def trusted_keys(extra: tuple[str, ...] | list[str] = ()) -> set[bytes]:
    """The keys ``up`` accepts: the ground-control key (if this machine has one) and each ``--trust``."""
    keys = {load_public_key(t) for t in extra}
    gc = ground_control_public()
    if gc is not None:
        keys.add(gc)
    return keys


def check_before_up(plan_path: str | Path, trust: tuple[str, ...] | list[str] = (),
                    scenario_digest: str | None = None):
    """Everything ``up`` needs from a plan, checked before anything is created; returns the open PlanDB.

    Structure (it opens as a route database of this format, every meta field sane), the signer (a
    trusted key), the seal (every row of every table as signed) and, when given, the scenario digest.
    Reads every byte once (hashing), does not walk tables: ``leo-emu verify`` is the full check.
    Refusals are bad input: :class:`PlanInputError`, exit code 2.
    """
    from emu.plan.db import PlanDB

    trusted = trusted_keys(trust)
    db = PlanDB(plan_path)
    try:
        signer = db.public_key
        if signer not in trusted:
            known = ", ".join(sorted(fingerprint(k) for k in trusted)) or "none"
            raise PlanInputError(f"plan: signed by an untrusted key {fingerprint(signer)} (trusted: {known}); "
                                 f"sign it with the ground-control key or pass --trust (got {echo(str(plan_path))})")
        problems = db.seal_problems()
        if problems:
            raise PlanInputError(f"plan: refused, does not match its signature: {problems[0]} "
                                 f"(got {echo(str(plan_path))})")
        if scenario_digest is not None and db.meta["scenario_digest"] != scenario_digest:
            raise PlanInputError(f"--plan: made from a different scenario (plan of {db.meta['scenario_name']!r}, "
                                 f"digest {db.meta['scenario_digest'][:12]}); re-plan it (got {echo(str(plan_path))})")
    except BaseException:
        db.close()
        raise
    return db


def _read_small(p: Path, field: str) -> bytes:
    try:
        if p.stat().st_size > MAX_KEY_FILE:
            raise InputError(f"{field}: too large for a key file (got {echo(str(p))})")
        return p.read_bytes()
    except OSError as exc:
        raise InputError(f"{field}: cannot read: {exc.strerror} (got {echo(str(p))})") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:80]
