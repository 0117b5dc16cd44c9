"""rtnetlink for the data plane: pyroute2 encodes and decodes, one batched transport sends.

Who does what:

- **pyroute2's message classes** (``ifinfmsg``, ``ifaddrmsg``, ``fibmsg``,
  ``ndmsg``, ``tcmsg``, ``rtmsg``; helpers in :mod:`emu.dataplane.nlmsg`)
  encode every request body except the bulk ones below, and decode every
  reply (``links``, ``addresses``, ``routes``, ``rules``, ``neighbours``, the
  FIB check's ``request_many``). Constants come from ``pyroute2.netlink`` /
  ``pyroute2.netlink.rtnl``.
- **our encoders** (:mod:`emu.dataplane.rtpack`, the one place that packs
  with ``struct``) write the measured hot paths: bulk route add/replace/del
  (:meth:`NetlinkBatch.route`), veth pairs (:meth:`NetlinkBatch.veth`) and
  addresses (:meth:`NetlinkBatch.addr`). ``scripts/bench_netlink.py``
  measures pyroute2's fastest mode at ~100-350 us per message against ~1-9 us
  here: 100k routes per slice cost ~10 s instead of ~0.2 s, the ~22,000
  addresses and ~3,400 veths of a Starlink shell 1 build several seconds
  instead of ~50 ms. ``tests/unit/test_nl_encoder.py`` decodes every kind they
  write with pyroute2's parser, field by field (links and addresses also
  byte for byte against pyroute2's own encoding).
- **the transport** (:class:`NetlinkBatch`): one NETLINK_ROUTE socket opened
  *inside* one namespace, a queue of requests, ``send()`` writing the queue
  in large chunks and ``_drain`` — the one receive loop — collecting
  failures (and, when asked, replies) by sequence number. pyroute2's own
  socket classes wait on asyncio per request (~1.5-2 ms each, measured with
  ``AsyncIPRoute`` and thousands of requests in flight); and opening one in a
  named namespace forks a child per socket.

Why batching: the kernel processes a netlink write synchronously inside
``sendmsg``, so when the write returns every reply of that chunk is queued
on the socket; a final NLMSG_NOOP carrying NLM_F_ACK marks the end of the
chunk, and we read until its ack. With ``ack_each=False`` only failures
answer (the kernel always reports an error), which skips one reply per
success on the bulk paths. Chunks are sized so all replies of one chunk fit
the 64 MB receive buffer (a full buffer makes the kernel drop acks: ENOBUFS).

Encoded bodies that depend only on the builder's arguments are memoised
(bringing ``lo`` up, a tbf of one rate on one ifindex, a rule ...): the same
pyroute2 bytes, encoded once per process instead of once per namespace.

Errors are collected per sequence number and raised as one DataplaneError
naming the operation, namespace, errno and the kernel's extended-ack text.
"""

from __future__ import annotations

import errno as E
import os
import socket
import struct
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from pyroute2.netlink import (NETLINK_EXT_ACK, NETLINK_ROUTE, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
                              NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
                              NLMSG_NOOP, SOL_NETLINK, nlmsgerr)
from pyroute2.netlink.rtnl import (RTM_DELADDR, RTM_DELLINK, RTM_DELRULE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWRULE)

from emu.dataplane import netns as _netns
from emu.dataplane import rtpack
from emu.dataplane.nlmsg import (ROUTE_TYPES, RT_TABLE_COMPAT, RT_TABLE_MAIN, RTN_LOCAL, RTN_UNICAST,  # noqa: F401
                                 RTN_UNREACHABLE, RTPROT_STATIC, VERB_FLAGS, link_del_body,
                                 link_set_body, rule_body, decode, encode, ip_bytes, ip_text,
                                 kind_body, mac_text, nla_id, opt_attrs, route_dict, split_prefix)
from emu.dataplane.nlread import Reads
from emu.dataplane.rtpack import RTA, RTA_DST, Nexthop, route_shape  # noqa: F401
from emu.errors import DataplaneError

# Not exported by pyroute2 0.9.7 (linux/netlink.h, socket.h):
NETLINK_CAP_ACK = 10                 # acks without the echoed request
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

_NLH = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_ERR = struct.Struct("=i")

CHUNK_BYTES = 1 << 20
CHUNK_MSGS = 16384  # x ~1 KB of kernel memory per reply stays well below 2 x 64 MB

_tls = threading.local()


def _recv_buffer() -> bytearray:
    """One receive buffer per thread, not per socket: 1,600 sockets with a
    private 1 MB buffer each cost 1.6 s of page faults in a torus build.
    64 KB holds any single reply (dump skbs are capped at 32 KB)."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = bytearray(64 << 10)
    return buf


@dataclass
class BatchResult:
    """What one ``send()`` did: messages written, every failure by sequence number,
    and (``collect=True``) every reply body by sequence number."""

    sent: int = 0
    errors: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # seq -> (errno, op, extack)
    tolerated: int = 0
    replies: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # seq -> [(type, body)]


AHEAD_SEQ = 1 << 31  # first sequence number of batches encoded ahead (NetlinkBatch.unbound(seq=), adopt)


class NetlinkBatch(Reads):
    """A NETLINK_ROUTE socket in namespace ``netns`` plus a queue of encoded requests.

    There is deliberately no way to open one in the caller's own (host)
    namespace: the emulator must never touch the host's links or routes.
    Not thread-safe; use one per namespace per thread.
    """

    def __init__(self, netns: str, *, ack_each: bool = True, rcvbuf: int = 64 << 20,
                 sndbuf: int = 8 << 20):
        self.netns = netns
        self.ack_each = ack_each
        with _netns.inside(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        s = self.sock
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
            s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)   # error text from the kernel
            s.bind((0, 0))
        except OSError as exc:
            s.close()
            raise DataplaneError("netlink socket setup", netns, exc.errno, exc.strerror or "") from exc
        s.settimeout(30.0)
        self._init_queue()

    @classmethod
    def unbound(cls, *, ack_each: bool = True, seq: int = 0) -> NetlinkBatch:
        """A batch without a socket: requests are encoded and queued (``messages()``)
        but cannot be sent. For tests of what the encoders write, dry runs, and messages encoded ahead for
        :meth:`adopt` (``seq``: where their sequence numbers start, :data:`AHEAD_SEQ`)."""
        b = cls.__new__(cls)
        b.netns, b.sock, b.ack_each = None, None, ack_each
        b._init_queue()
        b._seq = seq
        return b

    def _init_queue(self) -> None:
        self._seq = 0
        self._first = 1                                  # seq of _ops[0]; queued seqs are contiguous
        self._parts: list[bytes] = []
        self._ops: list[tuple[str, object]] = []         # (op, detail) per queued message
        self._route_shapes: dict[tuple, tuple[bytes, bytes, int, int]] = {}
        self._dump_ops: set[str] = set()                 # ops whose requests are dumps (see _drain)

    def adopt(self, other: NetlinkBatch) -> None:
        """Take over the requests queued on ``other`` (an :meth:`unbound` batch encoded ahead, while this
        namespace did not exist yet) as if they had been queued here; ``other`` is left empty, numbering its
        next messages on past the numbers these may spend. Only onto an empty queue: the sequence numbers go on
        from ``other``'s, which start at :data:`AHEAD_SEQ`, far from this socket's own, so a stale answer of an
        earlier send is still told apart (``_drain``)."""
        if self._ops:
            raise DataplaneError("netlink adopt", self.netns, E.EBUSY, "send() the queued batch first")
        if other.ack_each != self.ack_each:
            raise ValueError("adopt: both batches must ask the same acks")
        self._parts, self._ops, self._first, self._seq = other._parts, other._ops, other._first, other._seq
        self._dump_ops |= other._dump_ops
        seq = other._seq
        other._init_queue()
        # its numbering goes on past what sending these may spend (a barrier per chunk, at most one per message),
        # so what it queues next is told apart from the answers to what it gave
        other._seq = (seq + len(self._ops) + 1) & 0xFFFFFFFF

    def rewrite(self, op: str, fn: Callable[[bytes], bytes]) -> None:
        """Replace each queued message of operation ``op`` by ``fn(message)``, of the same length (a recorded
        veth request gets its peer's real namespace fd: :mod:`emu.dataplane.ahead`)."""
        for i, (o, _d) in enumerate(self._ops):
            if o == op:
                new = fn(self._parts[i])
                if len(new) != len(self._parts[i]):
                    raise ValueError("rewrite: a message may not change its length")
                self._parts[i] = new

    def messages(self) -> list[bytes]:
        """The queued requests, each a complete netlink message, in order (nothing is sent)."""
        return list(self._parts)

    # ---------------------------------------------------------------- transport
    @property
    def ack_each(self) -> bool:
        """Ask an ack for every message (True) or only hear about failures (False).
        Applies to messages queued after it is set."""
        return bool(self._ackflag)

    @ack_each.setter
    def ack_each(self, value: bool) -> None:
        self._ackflag = NLM_F_ACK if value else 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> NetlinkBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def first_op(self) -> str | None:
        """The operation of the first queued message (``"veth add"``, ``"nexthop"``...), or None."""
        return self._ops[0][0] if self._ops else None

    def __len__(self) -> int:
        return len(self._ops)

    def queue(self, msg_type: int, flags: int, body: bytes, op: str, detail: object = "") -> int:
        """Queue one request (header added here); return its sequence number."""
        if not self._ops:
            self._first = (self._seq + 1) & 0xFFFFFFFF
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        self._parts.append(_NLH.pack(16 + len(body), msg_type, flags | NLM_F_REQUEST | self._ackflag, seq, 0)
                           + body)
        self._ops.append((op, detail))
        return seq

    def queue_bulk(self, msgs: Sequence[tuple[int, int, bytes]], op: str, details: Sequence[object]) -> None:
        """Queue many encoded requests of one kind at once: (type, flags, body) each, with the detail of each
        for error messages (the bulk route path of a table refill, :func:`emu.dataplane.nlroute.route4_many`)."""
        if not self._ops:
            self._first = (self._seq + 1) & 0xFFFFFFFF
        seq, ack, pack = self._seq, self._ackflag | NLM_F_REQUEST, _NLH.pack
        first = seq + 1
        self._parts += [pack(16 + len(body), mtype, flags | ack, (first + i) & 0xFFFFFFFF, 0) + body
                        for i, (mtype, flags, body) in enumerate(msgs)]
        self._ops += [(op, d) for d in details]
        self._seq = (seq + len(msgs)) & 0xFFFFFFFF

    def send(self, ok: Iterable[int] = (), *, check: bool = True, collect: bool = False) -> BatchResult:
        """Write everything queued, then collect the kernel's answers.

        ``ok``: errnos to tolerate (e.g. ``{errno.EEXIST}`` when re-adding).
        ``check``: raise DataplaneError for the first other failure, after the
        whole queue was processed (the kernel keeps going after a failure).
        ``collect``: keep every reply that is not an ack (dumps, RTM_GETROUTE
        answers) in ``result.replies`` by sequence number.
        """
        if self.sock is None:
            raise DataplaneError("netlink send", None, E.ENOTCONN, "an unbound batch only encodes")
        parts, ops, first = self._parts, self._ops, self._first
        self._parts, self._ops = [], []
        okset = set(ok)
        result = BatchResult(sent=len(parts))
        ends = list(accumulate(map(len, parts)))  # a chunk ends with the message that reaches CHUNK_BYTES
        i, n = 0, len(parts)
        while i < n:
            j = min(bisect_left(ends, (ends[i - 1] if i else 0) + CHUNK_BYTES, i) + 1, n, i + CHUNK_MSGS)
            self._seq = barrier = (self._seq + 1) & 0xFFFFFFFF
            chunk = parts[i:j]
            chunk.append(_NLH.pack(16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier, 0))
            try:
                self.sock.send(b"".join(chunk))
            except OSError as exc:
                raise DataplaneError("netlink send", self.netns, exc.errno, exc.strerror or "") from exc
            dumps = {(first + k) & 0xFFFFFFFF for k in range(i, j) if ops[k][0] in self._dump_ops} \
                if self._dump_ops else set()
            self._drain(barrier, ops, first, okset, result, collect, dumps)
            i = j
        if check and result.errors:
            seq = min(result.errors, key=lambda s: (s - first) & 0xFFFFFFFF)
            code, op, text = result.errors[seq]
            more = f" (+{len(result.errors) - 1} more failures)" if len(result.errors) > 1 else ""
            raise DataplaneError(op, self.netns, code, f"{os.strerror(code)}{': ' + text if text else ''}{more}")
        return result

    def _drain(self, barrier: int, ops: list, first: int, okset: set[int], result: BatchResult,
               collect: bool, dumps: set[int]) -> None:
        """The one receive loop: read until the barrier's ack, sorting what arrives by sequence number.

        The kernel answers a netlink write in order, inside ``sendmsg``, so
        the barrier's ack comes after every other reply of the chunk -- except
        the rest of a dump that does not fit one skb: the kernel produces
        those parts as we read, after the barrier. ``dumps`` holds the
        sequence numbers of dumps still running; reading goes on until each
        has its NLMSG_DONE (or its error).
        """
        buf = _recv_buffer()
        view = memoryview(buf)
        barrier_seen = False
        while not (barrier_seen and not dumps):
            try:
                n = self.sock.recv_into(buf)
            except OSError as exc:
                raise DataplaneError("netlink recv", self.netns, exc.errno,
                                     f"{exc.strerror}; replies were lost, state unknown") from exc
            off = 0
            while off + 16 <= n:
                mlen, mtype, mflags, seq, _ = _NLH.unpack_from(buf, off)
                if mtype == NLMSG_ERROR:
                    code = -_ERR.unpack_from(buf, off + 16)[0]
                    dumps.discard(seq)
                    if seq == barrier:
                        barrier_seen = True
                        off += (mlen + 3) & ~3
                        continue
                    k = (seq - first) & 0xFFFFFFFF
                    if code and k < len(ops):   # k out of range: stale reply of an interrupted send
                        if code in okset:
                            result.tolerated += 1
                        else:
                            op, detail = ops[k]
                            text = _extack(bytes(view[off:off + mlen]), mflags)
                            result.errors[seq] = (code, f"{op} {_fmt(detail)}".strip(), text)
                elif mtype == NLMSG_DONE:
                    dumps.discard(seq)
                elif collect and ((seq - first) & 0xFFFFFFFF) < len(ops):
                    result.replies.setdefault(seq, []).append((mtype, bytes(view[off + 16:off + mlen])))
                off += (mlen + 3) & ~3 if mlen else n

    def request_many(self, msg_type: int, bodies: Sequence[bytes], flags: int = 0,
                     op: str = "request") -> list[tuple[int, list[tuple[int, bytes]]]]:
        """Send ``bodies`` now, all in flight at once; per request (errno or 0, [(type, reply body)])."""
        if self._ops:
            raise DataplaneError("netlink request", self.netns, E.EBUSY, "send() the queued batch first")
        save, self.ack_each = self.ack_each, False
        if flags & NLM_F_DUMP == NLM_F_DUMP:
            op = f"dump: {op}"
            self._dump_ops.add(op)
        try:
            seqs = [self.queue(msg_type, flags, b, op) for b in bodies]
        finally:
            self.ack_each = save
        res = self.send(check=False, collect=True)
        return [(res.errors[s][0] if s in res.errors else 0, res.replies.get(s, [])) for s in seqs]

    def dump(self, msg_type: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one dump request now; return (type, body) of every reply."""
        (code, replies), = self.request_many(msg_type, [body], NLM_F_DUMP, f"netlink dump type {msg_type}")
        if code:
            raise DataplaneError(f"netlink dump type {msg_type}", self.netns, code, os.strerror(code))
        return replies

    # ---------------------------------------------------------------- links (pyroute2 ifinfmsg)
    def veth(self, name: str, peer_name: str, peer_netns_fd: int | None = None, *, index: int = 0,
             peer_index: int = 0, mac: str | bytes | None = None, peer_mac: str | bytes | None = None,
             mtu: int | None = None, group: int | None = None) -> int:
        """Create veth ``name`` here (ifindex ``index``, 0 = kernel picks) whose peer
        ``peer_name`` lands in the namespace behind ``peer_netns_fd`` with ``peer_index``.

        Both ends come up down: bring them up with ``link_set`` in a later
        message (the peer cannot be brought up in the creating request:
        ENOTCONN). ``group`` (IFLA_GROUP) lets ``link_del_group`` remove many
        at once. The kernel resolves ``peer_netns_fd`` when the message is
        *sent*: keep the fd open until ``send()`` returns (else EBADF).
        """
        body = rtpack.veth_body(name, peer_name, peer_netns_fd, index, peer_index, mac, peer_mac, mtu, group)
        return self.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "veth add", f"{name}<->{peer_name}")

    def vxlan(self, name: str, vni: int, *, remote: str | None = None, local: str | None = None,
              dstport: int = 4789, dev_index: int | None = None, learning: bool = False,
              ttl: int | None = None, index: int = 0, mac: str | bytes | None = None,
              mtu: int | None = None) -> int:
        """Create a VXLAN device (the user-terminal tunnel on kernels without ipip)."""
        six = lambda a: a is not None and ":" in a  # noqa: E731
        data = opt_attrs(("IFLA_VXLAN_ID", vni), ("IFLA_VXLAN_LEARNING", int(learning)), ("IFLA_VXLAN_PORT", dstport),
                    ("IFLA_VXLAN_GROUP6" if six(remote) else "IFLA_VXLAN_GROUP", remote),
                    ("IFLA_VXLAN_LOCAL6" if six(local) else "IFLA_VXLAN_LOCAL", local),
                    ("IFLA_VXLAN_LINK", dev_index), ("IFLA_VXLAN_TTL", ttl))
        return self.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, kind_body(name, "vxlan", data, index, mac, mtu),
                          "vxlan add", name)

    def ipip(self, name: str, *, remote: str, local: str | None = None, dev_index: int | None = None,
             ttl: int | None = None, index: int = 0, mtu: int | None = None) -> int:
        """Create an ipip tunnel; on kernels without ipip the send fails with EOPNOTSUPP."""
        data = opt_attrs(("IFLA_IPIP_REMOTE", remote), ("IFLA_IPIP_LOCAL", local), ("IFLA_IPIP_LINK", dev_index),
                    ("IFLA_IPIP_TTL", ttl))
        return self.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, kind_body(name, "ipip", data, index, None, mtu),
                          "ipip add", name)

    def link_set(self, index: int, *, up: bool | None = None, mac: str | bytes | None = None,
                 mtu: int | None = None, group: int | None = None) -> int:
        """Change an existing link by ifindex: admin state, MAC, MTU, group."""
        what = "up" if up else "down" if up is not None else "set"
        return self.queue(RTM_NEWLINK, 0, link_set_body(index, up, mac, mtu, group), f"link {what}",
                          f"ifindex {index}")

    def link_del(self, index: int) -> int:
        """Delete a link by ifindex (a veth takes its peer with it)."""
        return self.queue(RTM_DELLINK, 0, link_del_body(index, None), "link del", f"ifindex {index}")

    def link_del_group(self, group: int) -> int:
        """Delete every link of IFLA_GROUP ``group`` in this namespace in one request."""
        return self.queue(RTM_DELLINK, 0, link_del_body(0, group), "link del group", str(group))

    # ---------------------------------------------------------------- addresses (pyroute2 ifaddrmsg)
    def addr(self, verb: str, index: int, address: str | bytes, plen: int, *, scope: int = 0,
             nodad: bool = True, peer: str | bytes | None = None) -> int:
        """Add (``add``/``replace``) or delete (``del``) an address. IPv6 gets
        IFA_F_NODAD unless ``nodad=False``, so it is usable at once; ``peer``: the other end of a point-to-point
        link, routed by the kernel instead of a prefix (:func:`rtpack.addr_body`)."""
        mtype = RTM_DELADDR if verb in ("del", "delete") else RTM_NEWADDR
        return self.queue(mtype, VERB_FLAGS[verb], rtpack.addr_body(address, plen, index, scope, nodad, peer),
                          _ADDR_OPS[verb], ("{}/{} dev {}", address, plen, index))

    # ---------------------------------------------------------------- rules (pyroute2 fibmsg)
    def rule(self, verb: str, *, table: int, priority: int, family: int = socket.AF_INET,
             mark: int | None = None, iif: str | None = None, dst: str | None = None) -> int:
        """An ``ip rule`` that sends lookups to ``table`` (the shadow-table switch): every lookup, or those
        with fwmark ``mark`` (exactly) and/or from interface ``iif`` and/or to prefix ``dst``."""
        mtype = RTM_DELRULE if verb in ("del", "delete") else RTM_NEWRULE
        flags = NLM_F_CREATE | NLM_F_EXCL if verb == "add" else 0
        return self.queue(mtype, flags, rule_body(verb, table, priority, family, mark, iif, dst), f"rule {verb}",
                          f"pref {priority} table {table}" + (f" fwmark {mark:#x}" if mark is not None else "")
                          + (f" iif {iif}" if iif else "") + (f" to {dst}" if dst else ""))

    # ---------------------------------------------------------------- routes: our encoder (the hot path)
    def route(self, verb: str, dst: str | bytes, plen: int | None = None, *, oif: int | None = None,
              gateway: str | bytes | None = None, onlink: bool = False, via: str | bytes | None = None,
              nexthops: Sequence[Nexthop] | None = None, table: int = RT_TABLE_MAIN,
              metric: int | None = None, scope: int | None = None, type: str | int = "unicast",
              protocol: int = RTPROT_STATIC) -> int:
        """Queue a route ``add`` / ``replace`` / ``append`` / ``del``.

        ``dst`` is ``"10.0.0.0/24"`` or an address with ``plen`` (text or
        packed bytes); a single nexthop is ``oif`` (+ ``gateway``, or ``via``
        for an IPv6 next hop of an IPv4 route, + ``onlink``); ``nexthops``
        makes a multipath route whose weights the kernel uses for UCMP.
        ``type`` is unicast, unreachable, blackhole, prohibit or local (name
        or RTN_* number). The scope defaults like iproute2's: link for a
        gateway-less unicast route, host for local, universe otherwise;
        ``del`` matches any scope.
        """
        if isinstance(dst, bytes) and plen is not None:
            d = dst
        else:
            d, plen = split_prefix(dst, plen)
        nh_key = tuple(nexthops) if nexthops else None
        key = (verb, len(d), plen, oif, gateway, via, nh_key, table, metric, scope, type, protocol, onlink)
        shape = self._route_shapes.get(key)
        if shape is None:
            if len(self._route_shapes) > 65536:
                self._route_shapes.clear()
            shape = self._route_shapes[key] = route_shape(*key)
        head, tail, mtype, flags = shape
        body = head + RTA.pack(4 + len(d), RTA_DST) + d + tail if plen or len(d) == 16 else head + tail
        # queue() inlined: this is the 100k-routes-per-slice path.
        if not self._ops:
            self._first = (self._seq + 1) & 0xFFFFFFFF
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        self._parts.append(_NLH.pack(16 + len(body), mtype, flags | self._ackflag, seq, 0) + body)
        self._ops.append((_ROUTE_OPS[verb], ("{}/{} table {}", d, plen, table)))
        return seq


_ROUTE_OPS = {v: f"route {v}" for v in VERB_FLAGS}
_ADDR_OPS = {v: f"addr {v}" for v in VERB_FLAGS}


def _fmt(detail: object) -> str:
    """Text for a queued message's detail, built only when that message failed:
    a tuple is ``(format, *args)`` with packed addresses among the args."""
    if isinstance(detail, tuple):
        if callable(detail[0]):
            return detail[0](*detail[1:])
        args = [ip_text(a) if isinstance(a, bytes) else a for a in detail[1:]]
        return detail[0].format(*args)
    return str(detail)


def _extack(msg: bytes, flags: int) -> str:
    """The kernel's error string (NLMSGERR_ATTR_MSG) from an NLMSG_ERROR, decoded by pyroute2, if any.

    With NETLINK_CAP_ACK the echoed request is cut to its header
    (NLM_F_CAPPED); the extended-ack attributes follow it.
    """
    if not flags & NLM_F_ACK_TLVS:
        return ""
    inner_len = 16 if flags & NLM_F_CAPPED else _NLH.unpack_from(msg, 20)[0]
    tlvs = msg[20 + ((inner_len + 3) & ~3):]
    err = nlmsgerr(_NLH.pack(20 + len(tlvs), NLMSG_ERROR, 0, 0, 0) + msg[16:20] + tlvs)
    try:
        err.decode()
    except Exception:  # an unparsable error text must not hide the errno
        return ""
    return err.get("NLMSGERR_ATTR_MSG") or ""
