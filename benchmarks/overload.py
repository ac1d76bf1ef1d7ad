"""Overload: the REST service driven far past its capacity sheds load instead of falling over.

    python benchmarks/overload.py [--workers 2] [--concurrency 8] [--factor 10]
        [--capacity-seconds 15] [--overload-seconds 30] [--warmup 5] [--image PATH]
        [--images 50] [--max-queued-jobs N] [--keys 8]

Service: `yingyan serve --workers N` as a subprocess on a fresh data folder (SQLite + FAISS, the
defaults), its settings from the environment (`YINGYAN_MAX_QUEUED_JOBS` when given, else the
default bound); `--keys` operator keys, the load spread over them in turn (each stays under
its role's default rate limit unless `--rate-limit` says otherwise). Request: `POST
/api/v1/detect`, multipart, real images in turn (default: the first image of the first
`--images` LFW people, 250x250; or `--image PATH`), detection only, audited like any request.

Phases, in one run against the same server:

1. capacity: a closed loop of `--concurrency` connections, each sending its next request as
   soon as the last was answered, `--warmup` s unmeasured then `--capacity-seconds` measured:
   requests answered 2xx per second is the capacity;
2. overload: an open loop at `--factor` × that capacity (requests sent on a fixed schedule,
   whatever the answers), over `--factor` × `--concurrency` connections, for
   `--overload-seconds`: accepted (2xx) requests per second, set against the capacity. A
   request still waiting for a free connection when the schedule ends is not sent (reported
   as such); with the defaults the 80 connections are more than `max_connections` (64), so
   uvicorn's own 503 is part of the answers too;
3. capacity after: the closed loop again (2 s unmeasured, `--capacity-seconds` measured): the
   service is back to its capacity, and a machine whose other load changed meanwhile shows.

Every answer is counted by status; only 2xx, 503 and 429 are allowed, anything else (and a
connection that failed) is a failure. The client is a minimal HTTP/1.1 one on asyncio streams
(keep-alive; a connection the server closes is opened again), so that the load generator
takes little of the machine the server shares with it. Server memory: the resident set of the
server process and of its worker processes (VmRSS from /proc, sampled every 0.2 s): idle
(ready, before any request), and the largest in each phase. Machine load: `uptime` before and
after, and the CPU that processes outside this run used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service_load import OtherLoad, clean_env, free_port, machine
from yingyan.access.keys import create_key
from yingyan.api.backpressure import job_limit
from yingyan.settings import Settings
from yingyan.store import open_database

from _common import lfw_images

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "yingyan-overload-bench"
ALLOWED = {429, 503}  # besides 2xx


# --- server and its memory --------------------------------------------------------------------


def rss_kib(root: int) -> tuple[int, int]:
    """(VmRSS of `root`, VmRSS of `root` and all its descendants), KiB, from /proc."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        parent[pid] = int(fields.get("PPid", "0").strip())
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    ours = {root}
    while more := {p for p, pp in parent.items() if pp in ours} - ours:
        ours |= more
    return rss.get(root, 0), sum(rss.get(p, 0) for p in ours)


def cpu_seconds(root: int) -> tuple[float, float, float]:
    """CPU seconds used so far (user + system, from /proc) by the server process `root`, by
    its descendants (the inference workers), and by this process (the load generator)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / tick
    ours = {root}
    while more := {p for p, pp in parent.items() if pp in ours} - ours:
        ours |= more
    workers = sum(used.get(p, 0.0) for p in ours - {root})
    me = os.times()
    return used.get(root, 0.0), workers, me.user + me.system


class CpuMeter:
    """CPU cores each party used over a phase: `start()`, then `stop(label)`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rows: list[str] = []
        self._t0 = 0.0
        self._c0 = (0.0, 0.0, 0.0)

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), cpu_seconds(self.pid)

    def stop(self, label: str) -> None:
        seconds = time.perf_counter() - self._t0
        server, workers, me = (b - a for a, b in zip(self._c0, cpu_seconds(self.pid), strict=True))
        self.rows.append(
            f"  {label}: workers {workers / seconds:.2f}, server process {server / seconds:.2f}, "
            f"load generator {me / seconds:.2f} cores"
        )


class MemorySampler(threading.Thread):
    """Samples the server's resident memory every `period` s; `mark(phase)` starts a phase."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.phase = "idle"
        self.peak: dict[str, tuple[int, int]] = {}  # phase: (largest server, largest total)
        self.samples: list[tuple[float, str, int, int]] = []
        self.stop_event = threading.Event()

    def mark(self, phase: str) -> None:
        self.phase = phase

    def run(self) -> None:
        while not self.stop_event.is_set():
            server, total = rss_kib(self.pid)
            phase = self.phase
            self.samples.append((time.perf_counter(), phase, server, total))
            old = self.peak.get(phase, (0, 0))
            self.peak[phase] = (max(old[0], server), max(old[1], total))
            self.stop_event.wait(self.period)


def start_server(
    data: Path, args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = clean_env()
    if args.max_queued_jobs is not None:
        env["YINGYAN_MAX_QUEUED_JOBS"] = str(args.max_queued_jobs)
    if args.rate_limit is not None:
        env["YINGYAN_RATE_LIMITS"] = json.dumps({"operator": args.rate_limit})
    cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--data-dir", str(data)]
    cmd += ["--port", str(port), "--workers", str(args.workers), "--host", "127.0.0.1"]
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return proc, url
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the server was not ready within 300 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(30)


# --- a minimal HTTP/1.1 client ----------------------------------------------------------------


def detect_request(port: int, token: str, image: bytes) -> bytes:
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="i.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = part + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /api/v1/detect HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class Answer:
    status: int  # 0: no answer (the connection failed)
    due: float  # when it was due (open loop: by the schedule; closed loop: when sent)
    done: float
    sent: float = 0.0  # when it went out (open loop: after `due` if every connection was busy)
    retry_after: str | None = None
    code: str | None = None  # the error body's code, when there is one
    error: str | None = None


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, raw: bytes, due: float) -> Answer:
        sent = time.perf_counter()
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more, anew
            fresh = self.writer is None
            try:
                if fresh:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert self.reader is not None and self.writer is not None
                self.writer.write(raw)
                await self.writer.drain()
                answer = await self._answer(due)
                answer.sent = sent
                return answer
            except (OSError, asyncio.IncompleteReadError, EOFError) as exc:
                await self.close()
                if fresh or attempt:
                    error = type(exc).__name__
                    return Answer(0, due, time.perf_counter(), sent, error=error)
        raise AssertionError("unreachable")

    async def _answer(self, due: float) -> Answer:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            raise EOFError
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        answer = Answer(status, due, time.perf_counter(), retry_after=headers.get("retry-after"))
        if status >= 400:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                parsed = json.loads(body)
                answer.code = (parsed.get("error") or {}).get("code") or parsed.get("code")
            if answer.code is None:
                answer.code = "text:" + body[:40].decode("latin-1", "replace")
        if headers.get("connection", "").lower() == "close" or "content-length" not in headers:
            await self.close()
        return answer


# --- load -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    answers: list[Answer] = field(default_factory=list)
    offered_rps: float | None = None
    late: int = 0  # open loop: requests sent over 50 ms after their due time
    unsent: int = 0  # open loop: still waiting for a connection when the schedule ended

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def accepted_rps(self) -> float:
        return sum(200 <= a.status < 300 for a in self.answers) / self.seconds

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if not (200 <= a.status < 300 or a.status in ALLOWED)]

    def latency_ms(self, ok: bool, q: float) -> float:
        """Sent to answered, ms, of the 2xx answers (`ok`) or of the others."""
        xs = sorted((a.done - a.sent) * 1000 for a in self.answers if (200 <= a.status < 300) == ok)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def closed_loop(
    port: int,
    requests: list[bytes],
    concurrency: int,
    warmup: float,
    seconds: float,
    name: str = "capacity",
) -> Phase:
    begin = time.perf_counter()
    start, end = begin + warmup, begin + warmup + seconds
    phase = Phase(name, seconds)
    turn = iter(range(10**9))

    async def worker() -> None:
        conn = Connection(port)
        try:
            while (sent := time.perf_counter()) < end:
                answer = await conn.request(requests[next(turn) % len(requests)], sent)
                if start <= answer.done <= end:
                    phase.answers.append(answer)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return phase


async def open_loop(
    port: int, requests: list[bytes], rps: float, connections: int, seconds: float
) -> Phase:
    """Requests due every 1/rps s for `seconds`, each sent on an idle connection (a pool of
    `connections` of them): every answer is counted; one still waiting for a connection when
    the schedule ends is not sent (counted as unsent)."""
    phase = Phase("overload", seconds, offered_rps=rps)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(Connection(port))
    begin = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()

    end = begin + seconds

    async def one(raw: bytes, due: float) -> None:
        conn = await idle.get()
        if time.perf_counter() > end:
            phase.unsent += 1
            idle.put_nowait(conn)
            return
        if time.perf_counter() - due > 0.05:
            phase.late += 1
        try:
            phase.answers.append(await conn.request(raw, due))
        finally:
            idle.put_nowait(conn)

    n = math.floor(rps * seconds)
    for i in range(n):
        due = begin + i / rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests[i % len(requests)], due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    # The window: the schedule, and the time its last answers took.
    phase.seconds = max(seconds, max((a.done for a in phase.answers), default=begin) - begin)
    while not idle.empty():
        await idle.get_nowait().close()
    return phase


# --- report -----------------------------------------------------------------------------------


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def describe(phase: Phase, capacity: float | None) -> list[str]:
    codes = Counter(a.code for a in phase.answers if a.status >= 400)
    lines = [
        f"{phase.name}: {len(phase.answers)} answers in {phase.seconds:.1f} s"
        + (f", offered {phase.offered_rps:.1f} req/s" if phase.offered_rps else "")
        + (
            f"; {phase.late} sent over 50 ms late, {phase.unsent} not sent (every connection "
            "busy until the schedule ended)"
            if phase.offered_rps
            else ""
        ),
        f"  statuses: {dict(sorted(phase.statuses.items()))}; error codes: {dict(codes)}",
        f"  accepted (2xx): {phase.accepted_rps:.2f} req/s"
        + (f" = {phase.accepted_rps / capacity:.0%} of capacity" if capacity else ""),
        f"  latency (sent to answered) 2xx p50 {phase.latency_ms(True, 0.5):.0f} ms, p95 "
        f"{phase.latency_ms(True, 0.95):.0f} ms; refusals p50 {phase.latency_ms(False, 0.5):.0f}"
        f" ms, p95 {phase.latency_ms(False, 0.95):.0f} ms",
    ]
    bad = phase.failures()
    if bad:
        lines.append(
            f"  FAILURES: {len(bad)}, e.g. {[(a.status, a.code, a.error) for a in bad[:5]]}"
        )
    missing = [a for a in phase.answers if a.status in ALLOWED and a.retry_after is None]
    if missing:
        codes = Counter(a.code for a in missing)
        lines.append(f"  refusals without Retry-After: {len(missing)} (codes {dict(codes)})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="closed loop, capacity phase")
    ap.add_argument("--factor", type=float, default=10.0, help="overload: × capacity, × conns")
    ap.add_argument("--capacity-seconds", type=float, default=15.0)
    ap.add_argument("--overload-seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--images", type=int, default=50, help="LFW images sent in turn")
    ap.add_argument("--image", type=Path, default=None, help="send this image instead")
    ap.add_argument("--max-queued-jobs", type=int, default=None, help="default: the service's")
    ap.add_argument("--rate-limit", default=None, help="operator keys' limit, e.g. 20/second")
    ap.add_argument("--keys", type=int, default=8, help="operator keys sharing the load")
    args = ap.parse_args()
    paths = [args.image] if args.image is not None else lfw_images(args.images)
    images = [p.read_bytes() for p in paths]
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="yy-overload-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "serve.log"
        proc, url = start_server(data, args, log)
        sampler = MemorySampler(proc.pid)
        try:
            port = int(url.rsplit(":", 1)[1])
            with open_database(None, data) as db, db.session() as s:
                tokens = [
                    create_key(s, name=f"bench{i}", role="operator").token for i in range(args.keys)
                ]
            # Key and image in turn: request i is key i % keys, image i % images.
            requests = [
                detect_request(port, tokens[i % len(tokens)], images[i % len(images)])
                for i in range(math.lcm(len(tokens), len(images)))
            ]
            sampler.start()
            time.sleep(2)  # idle samples
            with OtherLoad() as other:
                sampler.mark("capacity")
                cpu = CpuMeter(proc.pid)
                cpu.start()
                capacity = asyncio.run(
                    closed_loop(
                        port, requests, args.concurrency, args.warmup, args.capacity_seconds
                    )
                )
                cap_rps = capacity.accepted_rps
                if cap_rps <= 0:
                    raise SystemExit(
                        f"no request succeeded in the capacity phase: {capacity.statuses}"
                    )
                cpu.stop("capacity")
                sampler.mark("overload")
                cpu.start()
                connections = max(1, round(args.factor * args.concurrency))
                overload = asyncio.run(
                    open_loop(
                        port, requests, args.factor * cap_rps, connections, args.overload_seconds
                    )
                )
                cpu.stop("overload")
                sampler.mark("capacity after")
                again = asyncio.run(
                    closed_loop(
                        port,
                        requests,
                        args.concurrency,
                        2.0,
                        args.capacity_seconds,
                        "capacity after",
                    )
                )
            metrics = httpx.get(
                f"{url}/metrics",
                headers={"x-api-key": (data / "initial-admin-key").read_text().strip()},
            ).text
        finally:
            sampler.stop_event.set()
            stop_server(proc)
        log_text = log.read_text()
    settings = Settings(workers=args.workers, max_queued_jobs=args.max_queued_jobs)
    bound = job_limit(settings)
    default_limit = settings.rate_limits["operator"]
    peak = next(
        (
            line.split()[1]
            for line in metrics.splitlines()
            if line.startswith("yingyan_inference_jobs_peak ")
        ),
        "?",
    )
    idle = sampler.peak.get("idle", (0, 0))
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine()}",
        f"load before: {load_before}",
        f"load after:  {uptime()}",
        f"other load during the run: {other.cores:.2f} cores",
        f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}",
        f"images: {len(images)} ({paths[0].parent.parent.name}/..., mean "
        f"{sum(map(len, images)) / len(images) / 1024:.0f} KiB), POST /api/v1/detect; "
        f"workers {args.workers}; max_queued_jobs {bound}; max_connections "
        f"{settings.max_connections}; max_upload_bytes {settings.max_upload_bytes}; "
        f"{args.keys} operator keys (rate limit {args.rate_limit or default_limit})",
        *describe(capacity, None),
        *describe(overload, cap_rps),
        *describe(again, cap_rps),
        f"accepted under overload / capacity before and after (mean "
        f"{(cap_rps + again.accepted_rps) / 2:.2f} req/s): "
        f"{2 * overload.accepted_rps / (cap_rps + again.accepted_rps):.0%}",
        f"pool: most jobs admitted at once {peak} (bound {bound})",
        "CPU used per phase (warm-up included):",
        *cpu.rows,
        "server memory (VmRSS, server process / with its workers): "
        + "; ".join(f"{phase} {mib(s)} / {mib(t)}" for phase, (s, t) in sampler.peak.items())
        + " (idle: before any request; others: the largest in the phase)",
        f"bound on queued images: max_queued_jobs × max_upload_bytes = "
        f"{mib(bound * settings.max_upload_bytes // 1024)}; on bodies being read: "
        f"max_connections × max_upload_bytes = "
        f"{mib((settings.max_connections or 0) * settings.max_upload_bytes // 1024)}",
        f"server growth under overload: {mib(sampler.peak.get('overload', idle)[1] - idle[1])} "
        "(total, largest in the overload phase minus idle)",
    ]
    problems = [ln for ln in log_text.splitlines() if "Traceback" in ln or " ERROR " in ln]
    if problems:
        lines.append(f"server log: {len(problems)} error lines, e.g. {problems[:3]}")
    print("\n".join(lines))
    failed = capacity.failures() + overload.failures() + again.failures()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
