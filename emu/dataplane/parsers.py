"""Pure parsers of the measurement tools' output: text (or JSON) in, numbers out; and their argv.

ping (iputils), ``iperf3 -J``, ``/proc/PID/net/tcp`` listeners, ``ip -j addr``.
No process is started here: unit-tested on captured samples.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re

from emu.errors import DataplaneError


# ============================================================================ ip -j addr
def pick_global_ipv4(ip_json: str, family: str = "inet") -> str | None:
    """From ``ip -j -4 addr show`` output (``-6`` and ``family="inet6"``: IPv6), the address to aim at: on
    ``lo`` first, then the rest."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return None
    found: list[tuple[int, str]] = []
    for link in links:
        for a in link.get("addr_info", []):
            local = a.get("local")
            if not local or a.get("family") != family or a.get("scope", "global") != "global":
                continue
            if ipaddress.ip_address(local).is_loopback:
                continue
            found.append((0 if link.get("ifname") == "lo" else 1, local))
    return min(found)[1] if found else None


# ============================================================================ ping
_RE_REPLY = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?(?P<bytes>\d+) bytes from (?P<src>.+?): "
                       r"icmp_[rs]eq=(?P<seq>\d+)(?: ttl=(?P<ttl>\d+))?(?: time[=<](?P<rtt>[\d.]+) ?ms)?"
                       r"(?P<dup> \(DUP!\))?")
_RE_NOANSWER = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?no answer yet for icmp_seq=(?P<seq>\d+)")
_RE_ICMPERR = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?From (?P<src>\S+)(?: \([^)]*\))?:? "
                         r"icmp_seq=(?P<seq>\d+) (?P<msg>.+)$")
_RE_TX = re.compile(r"(?P<tx>\d+) packets transmitted, (?P<rx>\d+) (?:packets )?received")
_RE_LOSS = re.compile(r"(?P<loss>[\d.]+)% packet loss")
_RE_PLUS = re.compile(r"\+(?P<n>\d+) (?P<what>duplicates|errors|corrupted)")
_RE_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/(?:mdev|stddev))? = "
                     r"(?P<min>[\d.]+)/(?P<avg>[\d.]+)/(?P<max>[\d.]+)(?:/(?P<mdev>[\d.]+))? ms")
_RE_FATAL = re.compile(r"^ping6?: (?P<msg>.+)$")


def ping_argv(addr: str, count: int, interval_s: float, wait_s: float = 1.0) -> list[str]:
    """iputils ping: numeric, one line per reply *and* per unanswered probe (-O), unix timestamps (-D).

    ``-w`` bounds the whole run: count x interval plus one reply wait and a second of slack.
    """
    deadline = max(1, int(count * interval_s + wait_s + 1.999))
    return ["ping", "-n", "-O", "-D", "-c", str(count), "-i", f"{interval_s:g}", "-W", f"{wait_s:g}",
            "-w", str(deadline), addr]


def parse_ping(text: str) -> dict:
    """Numbers from iputils ping output (with or without -O/-D); tolerant of a missing summary.

    ``rtts_ms`` lists each first reply's RTT in arrival order (duplicates are
    counted apart). Without a statistics block (ping killed, or it failed
    before sending: ``error`` says why) the numbers come from the per-line output.
    """
    replies: list[dict] = []
    seen: set[int] = set()
    unanswered: list[int] = []
    icmp_errors: list[dict] = []
    messages: list[str] = []
    duplicates_seen = 0
    tx = rx = None
    loss = None
    plus = {"duplicates": 0, "errors": 0, "corrupted": 0}
    rtt = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _RE_REPLY.match(line):
            seq = int(m["seq"])
            if m["dup"] or seq in seen:
                duplicates_seen += 1
                continue
            seen.add(seq)
            replies.append({"seq": seq, "ttl": int(m["ttl"]) if m["ttl"] else None,
                            "rtt_ms": float(m["rtt"]) if m["rtt"] else None,
                            "at": float(m["at"]) if m["at"] else None, "from": m["src"]})
        elif m := _RE_NOANSWER.match(line):
            unanswered.append(int(m["seq"]))
        elif m := _RE_ICMPERR.match(line):
            icmp_errors.append({"seq": int(m["seq"]), "from": m["src"], "message": m["msg"].strip(),
                                "at": float(m["at"]) if m["at"] else None})
        elif m := _RE_FATAL.match(line):
            messages.append(m["msg"].strip())
        else:
            if m := _RE_TX.search(line):
                tx, rx = int(m["tx"]), int(m["rx"])
                for p in _RE_PLUS.finditer(line):
                    plus[p["what"]] = int(p["n"])
                if lm := _RE_LOSS.search(line):
                    loss = float(lm["loss"])
            elif m := _RE_RTT.search(line):
                rtt = {k: float(v) if v is not None else None for k, v in m.groupdict().items()}
    rtts = [r["rtt_ms"] for r in replies if r["rtt_ms"] is not None]
    summary = tx is not None
    if not summary:  # no statistics block: count from the lines
        seqs = [r["seq"] for r in replies] + unanswered + [e["seq"] for e in icmp_errors]
        tx = max(seqs) if seqs else 0
        rx = len(replies)
        plus["duplicates"] = duplicates_seen
        plus["errors"] = len({e["seq"] for e in icmp_errors})
    if loss is None:
        loss = round(100.0 * (tx - rx) / tx, 3) if tx else 100.0
    if rtt is None and rtts:
        rtt = {"min": min(rtts), "avg": round(sum(rtts) / len(rtts), 3), "max": max(rtts), "mdev": None}
    rtt = rtt or {"min": None, "avg": None, "max": None, "mdev": None}
    return {
        "transmitted": tx, "received": rx, "loss_pct": loss,
        "duplicates": plus["duplicates"], "errors": plus["errors"],
        "rtt_min_ms": rtt["min"], "rtt_avg_ms": rtt["avg"], "rtt_max_ms": rtt["max"], "rtt_mdev_ms": rtt["mdev"],
        "rtts_ms": rtts, "replies": replies, "unanswered_seqs": sorted(set(unanswered) - seen),
        "icmp_errors": icmp_errors, "messages": messages, "summary": summary,
        "error": None if summary else ("; ".join(messages) or "ping printed no statistics"),
    }


# ============================================================================ iperf3
def iperf_client_argv(addr: str, port: int, seconds: float, parallel: int, reverse: bool) -> list[str]:
    argv = ["iperf3", "-c", addr, "-p", str(port), "-J", "-t", f"{seconds:g}", "-P", str(parallel),
            "--connect-timeout", "3000"]
    return argv + (["-R"] if reverse else [])


def parse_iperf3(text: str, netns_name: str | None = None) -> dict:
    """The summary of ``iperf3 -J`` client output: receiver-side rate, retransmits, duration.

    TCP tests report ``end.sum_received`` (receiver side, also with ``-R``) and
    ``end.sum_sent`` (retransmits); UDP tests a single ``end.sum``. A run that
    failed before measuring raises DataplaneError with iperf3's own message.
    """
    doc = _json_object(text)
    if doc is None:
        raise DataplaneError("iperf3", netns_name, None, "no JSON output: " + (text.strip()[:200] or "nothing"))
    end = doc.get("end") or {}
    received = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    if doc.get("error") and not received:
        raise DataplaneError("iperf3", netns_name, None, str(doc["error"]))
    if not received:
        raise DataplaneError("iperf3", netns_name, None, "the JSON output has no end summary")
    test = (doc.get("start") or {}).get("test_start") or {}
    return {
        "bits_per_second": float(received.get("bits_per_second", 0.0)),
        "sender_bits_per_second": float(sent.get("bits_per_second", 0.0)) if sent else None,
        "bytes": int(received.get("bytes", 0)),
        "retransmits": sent.get("retransmits"),
        "seconds": float(received.get("seconds", received.get("end", 0.0))),
        "lost_percent": received.get("lost_percent"),
        "protocol": test.get("protocol"),
        "streams": test.get("num_streams"),
        "reverse": bool(test.get("reverse", 0)),
        "error": doc.get("error"),
        "iperf3": end,
    }


def _json_object(text: str) -> dict | None:
    """The JSON document in ``text``; tolerates stray lines printed before it."""
    text = text.strip()
    for start in [0] + [m.start() for m in re.finditer(r"^\{", text, re.M)]:
        try:
            doc = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


# ============================================================================ /proc/PID/net/tcp
def parse_proc_net_tcp(text: str) -> set[int]:
    ports = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:  # 0A = TCP_LISTEN
            with contextlib.suppress(ValueError):
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports
