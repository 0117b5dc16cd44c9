"""emu.dataplane.hostlimits on a fake /proc/sys tree: raise for a run, never lower, restore after the last run."""

from __future__ import annotations

import json

from emu.dataplane import hostlimits as H

K3, K2 = "net/ipv6/neigh/default/gc_thresh3", "net/ipv6/neigh/default/gc_thresh2"


def fake_proc(tmp_path, t2=512, t3=1024):
    root = tmp_path / "sys"
    for fam in H.FAMILIES:
        d = root / "net" / fam / "neigh" / "default"
        d.mkdir(parents=True)
        (d / "gc_thresh2").write_text(f"{t2}\n")
        (d / "gc_thresh3").write_text(f"{t3}\n")
    return root


def test_targets_keep_the_original_room_and_never_lower():
    cur = {k: (1024 if k.endswith("3") else 512) for k in H.keys()}
    t = H.targets(cur, {}, 23000)
    assert t[K3] == 1024 + 23000 and t[K2] == (1024 + 23000) // 2
    high = {k: (100000 if k.endswith("3") else 50000) for k in H.keys()}
    assert H.targets(high, cur, 10) == {}  # already above original + need: nothing written, nothing lowered


def test_raise_then_restore_after_the_last_run(tmp_path):
    proc, rec = fake_proc(tmp_path), tmp_path / "hostlimits.json"
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir()
    run_b.mkdir()
    out = H.raise_for(run_a, 9000, proc, rec)
    assert out["set"][K3] == 10024 and H.read(proc)[K2] == 5012
    assert json.loads((run_a / "hostlimits.json").read_text())["before"][K3] == 1024
    H.raise_for(run_b, 20000, proc, rec)  # a bigger run on top: measured from the original, not stacked
    assert H.read(proc)[K3] == 21024
    assert H.release(run_a, proc, rec) == {"restored": {}}  # b still relies on it
    assert H.read(proc)[K3] == 21024
    restored = H.release(run_b, proc, rec)["restored"]
    assert restored[K3] == 1024 and H.read(proc) == {k: (1024 if k.endswith("3") else 512) for k in H.keys()}
    assert not rec.exists()


def test_a_value_changed_by_someone_else_is_left_alone(tmp_path):
    proc, rec = fake_proc(tmp_path), tmp_path / "hostlimits.json"
    run = tmp_path / "r"
    run.mkdir()
    H.raise_for(run, 5000, proc, rec)
    (proc / K3).write_text("77777\n")
    H.release(run, proc, rec)
    assert H.read(proc)[K3] == 77777 and H.read(proc)[K2] == 512


def test_a_crashed_run_whose_directory_is_gone_does_not_hold_the_limits(tmp_path):
    proc, rec = fake_proc(tmp_path), tmp_path / "hostlimits.json"
    gone, live = tmp_path / "gone", tmp_path / "live"
    gone.mkdir()
    live.mkdir()
    H.raise_for(gone, 5000, proc, rec)
    H.raise_for(live, 5000, proc, rec)
    (gone / "hostlimits.json").unlink()
    gone.rmdir()
    H.release(live, proc, rec)
    assert H.read(proc)[K3] == 1024
