"""The fault-and-load run of ``benchmarks/load_test.py --faults``: one server on loopback,
one bounded run, everything at once.

Phases (one ``iqa-export serve`` process, ``--timeout`` seconds per request):

1. Load with faults, for ``--fault-seconds``: ``--clients`` keep-alive clients send normal
   pairs (every answer checked against the score computed in-process: a wrong answer is one
   that differs by more than ``tolerance("served_score")`` or carries another request id);
   beside them, slow clients dribble a body one byte at a time (expected: 408), bomb clients
   send 38 KB all-zero 6000 x 6600 PNG pairs (40 MP each decoded; expected: 503 busy or 504,
   never more than the pixel budget decoded), header-only bombs up to 2^31 px a side
   (expected: 413), and malformed requests (garbage, broken multipart, wrong content type,
   truncated and corrupt images, unknown routes; expected: 4xx).
2. SIGTERM with ``--clients`` normal requests in flight: each must be answered (200, right
   score) and the server must exit 0.

Lost: a request that was written and never got a response. The server's peak RSS is its
VmHWM (``/proc/PID/status``), read just before the SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import time
import uuid
import zlib
from collections import Counter

from load_test import BOUNDARY, Connection, multipart, request_head, start_server, wait_ready


def zero_png(width: int, height: int) -> bytes:
    """All-zero 8-bit grey PNG, compressed row by row (6000 x 6600: ~38 KB)."""
    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def header_only_png(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                0, 0, 0, 0))
            + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def malformed(png: bytes) -> list[tuple[str, bytes, bytes]]:
    """(name, head extra, body) of bad requests to /v1/score."""
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    return [
        ("garbage body", ctype, b"\x00\xff" * 500),
        ("json body", "Content-Type: application/json\r\n", b'{"ref": "a.png"}'),
        ("missing dist", ctype, multipart({"ref": png})),
        ("truncated png", ctype, multipart({"ref": png[:len(png) // 2], "dist": png})),
        ("corrupt png", ctype, multipart({"ref": png[:40] + bytes(200) + png[240:],
                                          "dist": png})),
        ("text, not an image", ctype, multipart({"ref": b"hello", "dist": png})),
        ("cut multipart", ctype, multipart({"ref": png, "dist": png})[:-30]),
    ]


class Tally:
    """Outcomes per kind of client."""

    def __init__(self) -> None:
        self.status: dict[str, Counter] = {}
        self.wrong: list[str] = []
        self.lost: list[str] = []
        self.answered = 0

    def add(self, kind: str, status: int | str) -> None:
        self.status.setdefault(kind, Counter())[status] += 1
        if isinstance(status, int):
            self.answered += 1


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def _normal(host, port, pairs, tally: Tally, stop: float, atol: float) -> None:
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    conn, i = Connection(host, port), 0
    try:
        while time.monotonic() < stop:
            pair, rid = pairs[i % len(pairs)], uuid.uuid4().hex
            i += 1
            head = request_head("POST", "/v1/score", host, f"{ctype}X-Request-Id: {rid}\r\n",
                                len(pair["body"]))
            await _checked(conn, head, pair, rid, tally, atol, "normal")
            if conn.writer is None:
                conn = Connection(host, port)
    finally:
        conn.close()


async def _checked(conn, head, pair, rid, tally: Tally, atol: float, kind: str) -> None:
    try:
        status, headers, data = await conn.request(head, pair["body"])
    except (OSError, asyncio.IncompleteReadError) as exc:
        tally.lost.append(f"{kind} {rid}: {type(exc).__name__}")
        conn.close()
        conn.writer = None
        return
    tally.add(kind, status)
    body = json.loads(data)
    if status != 200:
        tally.wrong.append(f"{kind} {rid}: HTTP {status} {body}")
    elif body.get("id") != rid or abs(body["score"] - pair["expected"]) > atol:
        tally.wrong.append(f"{kind} {rid}: {body} expected {pair['expected']}")


async def _one(host, port, head: bytes, body: bytes, tally: Tally, kind: str) -> None:
    conn = Connection(host, port)
    try:
        status, _, _ = await conn.request(head, body)
        tally.add(kind, status)
    except (OSError, asyncio.IncompleteReadError) as exc:
        tally.lost.append(f"{kind}: {type(exc).__name__}")
    finally:
        conn.close()


async def _repeat(stop: float, make) -> None:
    while time.monotonic() < stop:
        await make()


async def _slow(host, port, tally: Tally, stop: float) -> None:
    """A body announced as 100 KB, sent one byte every 0.2 s (expected: 408)."""
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    while time.monotonic() < stop:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_head("POST", "/v1/score", host, ctype, 100_000))
            read = asyncio.ensure_future(reader.readline())
            while not read.done():
                writer.write(b"-")
                await writer.drain()
                await asyncio.wait([read], timeout=0.2)
            line = read.result()
            tally.add("slow", int(line.split()[1]) if line else "closed")
        except (OSError, asyncio.IncompleteReadError) as exc:
            tally.add("slow", f"closed ({type(exc).__name__})")
        finally:
            writer.close()


async def _phase_load(url, pairs, args, tally: Tally, atol: float) -> None:
    host, port = url.split("//")[1].split(":")
    port = int(port)
    await wait_ready(host, port)
    stop = time.monotonic() + args.fault_seconds
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    bomb = multipart({"ref": zero_png(6000, 6600), "dist": zero_png(6000, 6600)})
    small = pairs[0]["body"]
    ref_png = small[small.index(b"\r\n\r\n") + 4:small.index(b"\r\n--")]
    headers = [multipart({"ref": header_only_png(w, h), "dist": ref_png})
               for w, h in ((8001, 8000), (20_000, 20_000), (2**31 - 1, 2**31 - 1))]
    bad = malformed(ref_png)
    counter = iter(range(10**9))

    def post(body: bytes, extra: str = ctype, path: str = "/v1/score") -> bytes:
        return request_head("POST", path, host, extra, len(body))

    tasks = [_normal(host, port, pairs, tally, stop, atol) for _ in range(args.clients)]
    tasks += [_slow(host, port, tally, stop) for _ in range(args.slow_clients)]
    tasks += [_repeat(stop, lambda: _one(host, port, post(bomb), bomb, tally, "bomb 40 MP"))
              for _ in range(2)]
    tasks += [_repeat(stop, lambda: _one(host, port, post(b := headers[next(counter) % 3]), b,
                                         tally, "header bomb")) for _ in range(2)]

    async def bad_one():
        name, extra, body = bad[next(counter) % len(bad)]
        await _one(host, port, post(body, extra), body, tally, "malformed")
        await _one(host, port, request_head("GET", "/v1/nope", host), b"", tally, "malformed")
        await asyncio.sleep(0.05)

    tasks += [_repeat(stop, bad_one) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*tasks), args.fault_seconds + 4 * args.timeout)


async def _phase_sigterm(url, pairs, args, proc, tally: Tally, atol: float) -> None:
    """``args.clients`` requests accepted, then SIGTERM: every one must be answered."""
    host, port = url.split("//")[1].split(":")
    port = int(port)
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    conns = [Connection(host, port) for _ in range(args.clients)]
    for c in conns:  # connect first: connections opened after SIGTERM are refused, not lost
        c.reader, c.writer = await asyncio.open_connection(host, port)
    jobs = []
    for k, c in enumerate(conns):
        pair, rid = pairs[k % len(pairs)], uuid.uuid4().hex
        head = request_head("POST", "/v1/score", host, f"{ctype}X-Request-Id: {rid}\r\n",
                            len(pair["body"]))
        jobs.append(asyncio.ensure_future(_checked(c, head, pair, rid, tally, atol,
                                                   "during SIGTERM")))
    await asyncio.sleep(0.05)  # written and on their way
    tally.peak_rss = peak_rss(proc.pid)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*jobs), 4 * args.timeout)
    for c in conns:
        c.close()


def run_faults(bundle, pairs: list[dict], args) -> dict:
    """Phases 1 and 2 against one server; the counts of the module docstring."""
    from cdiqa.tolerances import tolerance

    atol = tolerance("served_score").atol
    tally = Tally()
    proc, url = start_server(bundle, 8, args, timeout=args.timeout)
    start = time.monotonic()
    try:
        asyncio.run(_phase_load(url, pairs, args, tally, atol))
        asyncio.run(_phase_sigterm(url, pairs, args, proc, tally, atol))
        code = proc.wait(4 * args.timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            code = "killed"
    return {"seconds": time.monotonic() - start, "answered": tally.answered,
            "wrong": len(tally.wrong), "wrong_examples": tally.wrong[:5],
            "lost": len(tally.lost), "lost_examples": tally.lost[:5],
            "peak_rss": getattr(tally, "peak_rss", 0), "exit_code": code,
            "status": {k: dict(v) for k, v in tally.status.items()}}
