#!/usr/bin/env python3
"""Load test of ``iqa-export serve``: micro-batching (max batch 8) against batch-1 serving.

Run from the repository root when the machine is quiet (``uptime``)::

    .venv/bin/python benchmarks/load_test.py [--bundle DIR] [--write-docs]

What it does, all on loopback (127.0.0.1) and bounded in requests and seconds:

1. Bundle: ``--bundle``, else the default bundled model (``cdiqa/assets/default``) if it
   exists, else a freshly exported small model
   (default architecture, untrained: timing is what matters here, not the scores).
2. Pairs: ``--pairs`` distinct PNG pairs of ``--size``, each scored in this process by the
   runtime (``Scorer``) first: every served score is checked against it.
3. For each round of ``--rounds`` (alternating max batch 8 and 1, so drift hits both): start
   ``python -m cdiqa.cli serve BUNDLE --port 0`` as a subprocess, wait for /readyz, send
   ``--requests`` requests from ``--clients`` concurrent keep-alive connections (asyncio
   streams with prebuilt requests: a cheap client, see ``Connection``), stop the server with
   SIGTERM (it must exit 0 after answering everything).
4. Every request carries a unique ``X-Request-Id``; a round fails if any response is not 200,
   carries another id, scores outside ``cdiqa.tolerances`` ("served_score") of the in-process
   score, or if an id is answered twice or never (lost).
5. Reports requests/s, p50/p99 latency and the server's mean micro-batch size (from
   /metrics) per setting; ``--write-docs`` writes the table into docs/benchmarks.md's
   "Serving" section (only that section is replaced).

Exit status: 0 when every check passed and micro-batching served more requests/s than
batch-1 serving, 1 otherwise.

``--faults`` runs the fault-and-load run instead (``load_faults``: concurrent, slow, bomb and
malformed clients at once, then a SIGTERM with requests in flight); it prints requests
answered, wrong answers, lost requests and the server's peak RSS, and exits 0 only if no
answer was wrong or lost, the server exited 0 and its peak RSS stayed under ``--rss-bound``.
``--write-docs`` then writes the "Serving under faults" section.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when loaded by path

from _report import (DOCS, ROOT, command_line, cpu_flags, cpu_model,  # noqa: E402
                     replace_section, utc_now, write_text)

SECTION = "## Serving"
BOUNDARY = "cdiqa-load-test-boundary"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="bundle to serve (default: see above)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="image size of the pairs")
    p.add_argument("--pairs", type=int, default=16, help="distinct pairs sent round-robin")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--requests", type=int, default=1000, help="requests per round")
    p.add_argument("--rounds", type=int, default=6, help="rounds, alternating batch 8 and 1")
    p.add_argument("--threads", type=int, default=1, help="server ORT threads (0: ORT's "
                                                          "default, all cores)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="server micro-batch wait")
    p.add_argument("--round-timeout", type=float, default=120.0, help="seconds per round cap")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--faults", action="store_true", help="the fault-and-load run instead")
    p.add_argument("--fault-seconds", type=float, default=40.0, help="--faults: load phase")
    p.add_argument("--slow-clients", type=int, default=4, help="--faults: slow senders")
    p.add_argument("--timeout", type=float, default=10.0, help="--faults: server --timeout")
    p.add_argument("--rss-bound", type=float, default=3.5, help="--faults: peak RSS bound, "
                                                               "GB (docs/serving.md)")
    return p.parse_args(argv)


# ---- setup ----


def resolve_bundle(arg: Path | None, tmp: Path) -> tuple[Path, str]:
    """(bundle, words saying which model it is)."""
    if arg is not None:
        return arg, f"bundle {arg}"
    from cdiqa.manifest import DEFAULT_BUNDLE

    if (Path(DEFAULT_BUNDLE) / "manifest.json").is_file():
        return Path(DEFAULT_BUNDLE), "the default bundled model (cdiqa/assets/default/bundle)"
    from cdiqa.export.bundle import export_bundle
    from cdiqa.export.testing import fitted_head
    from cdiqa.model.network import CDIQA, ModelConfig

    torch = __import__("torch")
    torch.manual_seed(0)
    model = CDIQA(ModelConfig()).eval()
    out = tmp / "bundle"
    export_bundle(out, model, {"natural": fitted_head(model)})
    return out, ("a freshly exported untrained model of the default architecture (channels "
                 f"{ModelConfig().channels}; the compute of the default model, random weights): "
                 "cdiqa/assets/default does not exist yet")


def make_pairs(bundle: Path, n: int, size: tuple[int, int]) -> list[dict]:
    """PNG pairs with their in-process scores and ready multipart bodies."""
    from PIL import Image

    from cdiqa.runtime import Scorer, SessionOptions

    rng = np.random.default_rng(0)
    pairs = []
    with Scorer.load(bundle, "onnxruntime", "cpu", options=SessionOptions(threads=1)) as scorer:
        for i in range(n):
            ref = (rng.random((*size, 3)) * 255).astype(np.uint8)
            noise = rng.normal(0, 4 + 3 * i, ref.shape)
            dist = np.clip(ref + noise, 0, 255).astype(np.uint8)
            files = {}
            for name, a in (("ref", ref), ("dist", dist)):
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, format="PNG")
                files[name] = buf.getvalue()
            pairs.append({"body": multipart(files), "expected": scorer.score(ref, dist)})
    return pairs


def multipart(files: dict[str, bytes]) -> bytes:
    """A multipart/form-data body (built once, so the clients spend little CPU)."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.png"'
             f"\r\nContent-Type: image/png\r\n\r\n".encode() + v + b"\r\n"
             for k, v in files.items()]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def machine_info() -> dict:
    """CPU model, cores, Python version and load average now (the section's machine line)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_before": os.getloadavg()}


# ---- one round ----


def start_server(bundle: Path, max_batch: int, args, timeout: float = 60.0
                 ) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "cdiqa.cli", "serve", str(bundle), "--host", "127.0.0.1",
           "--port", "0", "--backend", "onnxruntime", "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "512", "--timeout",
           str(timeout)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    line = proc.stdout.readline()  # "cdiqa serving on http://127.0.0.1:PORT"
    match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, match.group(1)


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    A load generator on the same two cores as the server must be cheap: httpx spent more CPU
    per request (~5 ms) than the server (~4 ms) here, so the clients measured themselves.
    This sends prebuilt bytes and parses only the status, Content-Length and body.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, dict, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def request_head(method: str, path: str, host: str, extra: str = "", length: int = 0) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {length}"
            "\r\n\r\n").encode()


async def wait_ready(host: str, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = Connection(host, port)
        try:
            status, _, _ = await conn.request(request_head("GET", "/readyz", host))
            if status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise SystemExit(f"server at {host}:{port} not ready after {timeout} s")


async def drive(url: str, pairs: list[dict], args) -> dict:
    """Send ``args.requests`` requests from ``args.clients`` clients; check every answer."""
    from cdiqa.tolerances import tolerance

    atol = tolerance("served_score").atol
    host, port = url.split("//")[1].split(":")
    port = int(port)
    sent: dict[str, int] = {}
    answered: dict[str, int] = {}
    latencies, failures = [], []
    counter = iter(range(args.requests))
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    await wait_ready(host, port)

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            for i in counter:
                rid, pair = uuid.uuid4().hex, pairs[i % len(pairs)]
                sent[rid] = i
                head = request_head("POST", "/v1/score", host,
                                    f"{ctype}X-Request-Id: {rid}\r\n", len(pair["body"]))
                t0 = time.perf_counter()
                try:
                    status, headers, data = await conn.request(head, pair["body"])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    failures.append(f"{rid}: {type(exc).__name__}: {exc}")
                    conn.close()
                    conn = Connection(host, port)
                    continue
                latencies.append(time.perf_counter() - t0)
                body = json.loads(data)
                got = body.get("id")
                answered[got] = answered.get(got, 0) + 1
                if status != 200 or got != rid or headers.get("x-request-id") != rid:
                    failures.append(f"{rid}: HTTP {status} id {got} {body}")
                elif abs(body["score"] - pair["expected"]) > atol:
                    failures.append(f"{rid}: score {body['score']} != {pair['expected']}")
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(args.clients))),
                           args.round_timeout)
    wall = time.perf_counter() - start
    conn = Connection(host, port)
    _, _, metrics = await conn.request(request_head("GET", "/metrics", host))
    conn.close()
    lost = sorted(set(sent) - set(answered))
    duplicated = sorted(k for k, v in answered.items() if v > 1)
    foreign = sorted(set(answered) - set(sent))
    return {"wall_s": wall, "completed": len(latencies), "failures": failures[:10],
            "n_failures": len(failures), "lost": len(lost), "duplicated": len(duplicated),
            "foreign": len(foreign), "latencies": latencies,
            "mean_batch": _mean_batch(metrics.decode())}


def _mean_batch(metrics: str) -> float:
    total = re.search(r"^cdiqa_batch_size_sum (\S+)", metrics, re.M)
    count = re.search(r"^cdiqa_batch_size_count (\S+)", metrics, re.M)
    return float(total.group(1)) / max(1.0, float(count.group(1))) if total and count else 0.0


def run_round(bundle: Path, max_batch: int, pairs: list[dict], args) -> dict:
    proc, url = start_server(bundle, max_batch, args)
    try:
        result = asyncio.run(drive(url, pairs, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed"
    result["exit_code"] = code
    result["max_batch"] = max_batch
    return result


# ---- report ----


def summarise(rounds: list[dict]) -> dict[int, dict]:
    out = {}
    for b in sorted({r["max_batch"] for r in rounds}, reverse=True):
        rs = [r for r in rounds if r["max_batch"] == b]
        lat = np.array([x for r in rs for x in r["latencies"]]) * 1000
        out[b] = {"rounds": len(rs), "requests": sum(r["completed"] for r in rs),
                  "rps": statistics.median(r["completed"] / r["wall_s"] for r in rs),
                  "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                  "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
                  "mean_batch": statistics.mean(r["mean_batch"] for r in rs),
                  "errors": sum(r["n_failures"] + r["lost"] + r["duplicated"] + r["foreign"]
                                for r in rs)}
    return out


def table(summary: dict[int, dict]) -> str:
    rows = ["| server max batch | requests | requests/s (median of rounds) | p50 ms | p99 ms | "
            "mean micro-batch | failed / lost / duplicated |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for b, s in summary.items():
        rows.append(f"| {b} | {s['requests']} | {s['rps']:.0f} | {s['p50_ms']:.1f} | "
                    f"{s['p99_ms']:.1f} | {s['mean_batch']:.2f} | {s['errors']} |")
    return "\n".join(rows)


def section(summary, info: dict, args, model: str, command: str) -> str:
    gain = summary[8]["rps"] / summary[1]["rps"] if 8 in summary and 1 in summary else float("nan")
    return "\n".join([
        SECTION, "",
        "`benchmarks/load_test.py`: concurrent clients against `iqa-export serve` on loopback, "
        "every answer checked against the in-process score (Scorer) and its request id; micro-"
        "batching (server `--max-batch 8`) and batch-1 serving (`--max-batch 1`) measured in "
        "the same run, in alternating rounds.", "",
        f"- date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores (shared; load average before "
        f"{info['load_before'][0]:.2f}, after {info['load_after'][0]:.2f}), Python "
        f"{info['python']}, clients in the same machine",
        f"- model: {model}",
        f"- workload: {args.clients} concurrent clients, {args.requests} requests per round, "
        f"{args.rounds} rounds, {args.pairs} distinct {args.size[0]}x{args.size[1]} PNG pairs, "
        f"server ONNX Runtime threads {args.threads or 'default (all cores)'}, max wait "
        f"{args.max_wait_ms} ms",
        f"- command: `{command}`", "",
        table(summary), "",
        f"Micro-batching served {gain:.2f}x the requests/s of batch-1 serving.", ""])


FAULT_SECTION = "## Serving under faults"


def faults_main(args, info: dict, command: str) -> int:
    """``--faults``: one fault-and-load run, its counts printed (and written with
    ``--write-docs``)."""
    from load_faults import run_faults

    with tempfile.TemporaryDirectory(prefix="cdiqa-load-") as tmp:
        bundle, model = resolve_bundle(args.bundle, Path(tmp))
        pairs = make_pairs(bundle, args.pairs, tuple(args.size))
        result = run_faults(bundle, pairs, args)
    info["load_after"], info["date"] = os.getloadavg(), utc_now()
    ok = (result["wrong"] == result["lost"] == 0 and result["exit_code"] == 0
          and 0 < result["peak_rss"] < args.rss_bound * 1e9)
    lines = [f"requests answered: {result['answered']}", f"wrong answers: {result['wrong']}",
             f"lost requests: {result['lost']}",
             f"server peak RSS: {result['peak_rss'] / 1e9:.2f} GB (bound {args.rss_bound} GB)",
             f"server exit status after SIGTERM: {result['exit_code']}",
             f"run: {result['seconds']:.0f} s"]
    for kind, counts in result["status"].items():
        lines.append(f"{kind}: " + ", ".join(f"{k}: {v}" for k, v in sorted(
            counts.items(), key=lambda kv: str(kv[0]))))
    print("\n".join(lines + result["wrong_examples"] + result["lost_examples"]))
    if args.write_docs:
        replace_section(DOCS, FAULT_SECTION, fault_section(lines, info, args, model, command))
        print(f"wrote the {FAULT_SECTION[3:]} section of {DOCS}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def fault_section(lines: list[str], info: dict, args, model: str, command: str) -> str:
    return "\n".join([
        FAULT_SECTION, "",
        "`benchmarks/load_test.py --faults` (`benchmarks/load_faults.py`): one `iqa-export\n"
        "serve` on loopback under normal clients (every score checked against the in-process\n"
        "score and its request id), slow senders, 38 KB bombs of 6000x6600 (40 MP decoded),\n"
        "header-only bombs, malformed requests, then a SIGTERM with requests in flight.\n"
        "Server defaults otherwise: `max_pixels` 64 MP, in-flight budget 128 MP (2 x\n"
        "`max_pixels`), tiles of 512. Wrong: a score off the in-process one by more than\n"
        "`tolerance(\"served_score\")`, another request id, or a non-200 answer to a normal\n"
        "request; lost: written, never answered. The peak RSS is the server's VmHWM.", "",
        f"- date: {info['date']}",
        f"- machine: {info['cpu']} ({cpu_flags()}), {info['cores']} cores (shared; load "
        f"average before {info['load_before'][0]:.2f}, after {info['load_after'][0]:.2f}), "
        f"Python {info['python']}, clients on the same machine; server ONNX Runtime threads "
        f"{args.threads or 'default (all cores)'}",
        f"- model: {model}",
        f"- workload: {args.clients} normal clients, {args.slow_clients} slow clients, 2 bomb "
        f"and 2 header-bomb clients, 2 malformed-request clients for {args.fault_seconds:.0f} "
        f"s, server --timeout {args.timeout:g}, {args.pairs} distinct {args.size[0]}x"
        f"{args.size[1]} PNG pairs",
        f"- command: `{command}`", "",
        *[f"- {line}" for line in lines], ""])


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine_info()
    command = command_line(__file__, argv)
    if args.faults:
        return faults_main(args, info, command)
    with tempfile.TemporaryDirectory(prefix="cdiqa-load-") as tmp:
        bundle, model = resolve_bundle(args.bundle, Path(tmp))
        pairs = make_pairs(bundle, args.pairs, tuple(args.size))
        rounds = []
        for k in range(args.rounds):
            max_batch = 8 if k % 2 == 0 else 1
            r = run_round(bundle, max_batch, pairs, args)
            print(f"round {k + 1}: max batch {max_batch}: {r['completed']} ok in "
                  f"{r['wall_s']:.1f} s ({r['completed'] / r['wall_s']:.0f}/s), mean batch "
                  f"{r['mean_batch']:.2f}, failures {r['n_failures']}, lost {r['lost']}, "
                  f"duplicated {r['duplicated']}, exit {r['exit_code']}", flush=True)
            for f in r["failures"]:
                print("  ", f)
            rounds.append(r)
    info["load_after"] = os.getloadavg()
    info["date"] = utc_now()
    summary = summarise(rounds)
    print(table(summary))
    text = section(summary, info, args, model, command)
    if args.write_docs:
        replace_section(DOCS, SECTION, text)
        print(f"wrote the Serving section of {DOCS}")
    if args.json:
        write_text(args.json, json.dumps({"info": info, "summary": summary, "model": model},
                                         indent=2, default=str))
    ok = (all(r["n_failures"] == r["lost"] == r["duplicated"] == r["foreign"] == 0
              and r["exit_code"] == 0 and r["completed"] == args.requests for r in rounds)
          and summary[8]["rps"] > summary[1]["rps"])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
