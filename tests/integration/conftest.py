"""Integration tier: real namespaces, root only, uniquely named, always removed.

Every test that makes namespaces takes its names from a prefix fixture
(``t<pid><4 hex>-``), so parallel runs and other users' namespaces are never
touched, and cleanup removes exactly what carries the prefix: on success, on
failure, and once more at session end for anything a crashed fixture left.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest

from emu.dataplane import netns

_handed_out: set[str] = set()


def _new_prefix() -> str:
    prefix = f"t{os.getpid()}{secrets.token_hex(2)}-"
    _handed_out.add(prefix)
    return prefix


def _remove_prefix(prefix: str) -> None:
    netns.delete_many(netns.list_names(prefix))


@pytest.fixture(scope="session")
def _netns_capable() -> None:
    """Skip (not fail) the tier where namespaces cannot be made, saying why."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for real namespaces")
    probe = _new_prefix() + "probe"
    try:
        netns.create(probe)
    except Exception as exc:  # e.g. root in a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot create a network namespace here: {exc}")
    finally:
        netns.delete_many([probe])


@pytest.fixture(autouse=True)
def _require_root(_netns_capable: None) -> None:
    """Applies the capability check to every test of this tier."""


@pytest.fixture(scope="session", autouse=True)
def _sweep_at_session_end() -> Iterator[None]:
    yield
    for prefix in sorted(_handed_out):
        _remove_prefix(prefix)


@pytest.fixture
def ns_prefix(_netns_capable: None) -> Iterator[str]:
    """A fresh name prefix; every namespace named with it is removed afterwards."""
    prefix = _new_prefix()
    try:
        yield prefix
    finally:
        _remove_prefix(prefix)


@pytest.fixture(scope="module")
def module_ns_prefix(_netns_capable: None) -> Iterator[str]:
    """Like ``ns_prefix``, shared by the tests of one module (for a topology built once)."""
    prefix = _new_prefix()
    try:
        yield prefix
    finally:
        _remove_prefix(prefix)


@pytest.fixture
def make_ns(ns_prefix: str) -> Callable[..., list[str]]:
    """``make_ns("a", "b")`` creates ``<prefix>a``, ``<prefix>b`` and returns the full names."""
    def make(*suffixes: str, sysctls: dict | None = None) -> list[str]:
        names = [ns_prefix + s for s in suffixes]
        netns.create_many(names, sysctls)
        return names
    return make


@pytest.fixture(scope="module")
def leo_env(tmp_path_factory, module_ns_prefix: str) -> Iterator[dict]:
    """Environment for `leo-emu` subprocesses: a private run directory and this module's unique run prefix.

    At the end every run is brought down and anything left under the prefix swept.
    """
    from .test_dataplane import leo, sweep

    env = dict(os.environ)
    env["LEOEMU_RUN_DIR"] = str(tmp_path_factory.mktemp("runs"))
    env["LEOEMU_RUN_ID_PREFIX"] = module_ns_prefix.rstrip("-")
    yield env
    leo(env, "down", "--all", check=False)
    sweep(module_ns_prefix.rstrip("-"))
