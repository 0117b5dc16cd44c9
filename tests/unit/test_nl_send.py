"""NetlinkBatch.send's writes (no root: a fake socket acks every barrier): every queued message goes out once,
in order, in writes that end with the message reaching CHUNK_BYTES or at CHUNK_MSGS messages, each followed by
its barrier; a failure inside a chunk is told by its sequence number."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.dataplane import netlink as N
from emu.dataplane.netlink import NetlinkBatch
from emu.errors import DataplaneError

NLH = struct.Struct("=IHHII")


class FakeSock:
    """Acks each write's last message (the barrier) and fails the sequence numbers in ``fail``."""

    def __init__(self, fail=()):
        self.writes: list[bytes] = []
        self.replies: list[bytes] = []
        self.fail = set(fail)

    def send(self, data: bytes) -> int:
        self.writes.append(data)
        off = 0
        while off < len(data):
            size, _t, _f, seq, _p = NLH.unpack_from(data, off)
            last = off + size >= len(data)
            if last or seq in self.fail:
                code = -22 if seq in self.fail and not last else 0
                err = struct.pack("=i", code) + data[off:off + 16]
                self.replies.append(NLH.pack(16 + len(err), N.NLMSG_ERROR, 0, seq, 0) + err)
            off += (size + 3) & ~3
        return len(data)

    def recv_into(self, buf) -> int:
        r = self.replies.pop(0)
        buf[:len(r)] = r
        return len(r)


def batch(sizes: list[int], fail=()) -> tuple[NetlinkBatch, FakeSock, list[bytes]]:
    b = NetlinkBatch.unbound(ack_each=False)
    b.netns = "fake"
    for i, n in enumerate(sizes):
        b.queue(0x18, 0, bytes([i & 0xFF]) * (4 * n), "op", i)
    msgs = b.messages()
    b.sock = FakeSock(fail)
    return b, b.sock, msgs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 8, 64, 1024, 40_000, 262_144]), max_size=300), st.integers(1, 40))
def test_every_message_goes_once_in_order_in_bounded_writes(sizes, cap) -> None:
    old = N.CHUNK_MSGS
    N.CHUNK_MSGS = cap
    try:
        b, sock, msgs = batch(sizes)
        assert b.send().sent == len(msgs)
    finally:
        N.CHUNK_MSGS = old
    out = []
    for w in sock.writes:
        parts, off = [], 0
        while off < len(w):
            size = NLH.unpack_from(w, off)[0]
            parts.append(w[off:off + size])
            off += (size + 3) & ~3
        body, barrier = parts[:-1], parts[-1]
        assert NLH.unpack_from(barrier)[1] == N.NLMSG_NOOP
        assert 1 <= len(body) <= cap
        assert sum(map(len, body[:-1])) < N.CHUNK_BYTES  # the chunk ends with the message reaching the limit
        out += body
    assert out == msgs


def test_a_failure_names_its_message() -> None:
    b, _sock, msgs = batch([1] * 10, fail={5})
    with pytest.raises(DataplaneError) as e:
        b.send()
    assert "op 4" in str(e.value)  # the fifth message queued (sequence numbers from 1)
