"""Load on the REST service: verify and identify requests/s and latency at concurrency 8 against
a 100k gallery, and the same work done in-process without HTTP, in the same run.

    python benchmarks/service_load.py [--size 100000] [--concurrency 8] [--duration 30]
        [--warmup 5] [--workers 2] [--real 300] [--rebuild]

Data folder (`out/bench-service-100k/`, built once and reused while `bench.json` matches): one
gallery of `--size` subjects, exactly what `yingyan serve --data-dir` opens (SQLite, flat FAISS
index, templates and index file encrypted with the folder's keyring). `--real` LFW people are
enrolled from a real image each (one face found, embedded by the service's engine config); the
rest are synthetic templates drawn as in `search_latency.py` (a Gaussian fitted to 2,000 real LFW
templates, normalised), all written through `GalleryService.enroll`.

Service: `yingyan serve --workers N` as a subprocess on a free loopback port; an operator key is
issued with `yingyan keys create` and revoked at the end (both audited). Load generator: a
closed loop of `--concurrency` asyncio tasks with httpx (keep-alive connections) in a separate
process, on the same machine as the server: they share its cores. Scenarios, each `--warmup`
seconds unmeasured and then `--duration` seconds measured:

- verify: `POST /api/v1/verify`, multipart `probe` + `reference`, real LFW images of one face
  each, genuine and impostor pairs alternating ("correct": match == same person);
- identify: `POST /api/v1/galleries/{g}/identify?k=10`, multipart `probe`, another LFW image of
  an enrolled real person ("correct": that person ranked first among 100k).

Requests/s counts the requests completed within the measured window; latencies are client-side
(send to response read) of those requests. Baseline, after the server has stopped: the same
requests, same images and concurrency, done in this process without HTTP: the engine in N
worker processes (`yingyan.api.inference.InferencePool`, as the service runs it) and
`GalleryService.identify` on the same data folder under one lock. The ratio service/direct is
what HTTP, multipart parsing, key checks, the audit append and JSON cost on this machine.
The server's log is scanned afterwards for errors, warnings and non-2xx responses. "other load"
is the CPU that processes outside this run used meanwhile (from /proc): on a shared machine a
figure taken beside another job is flagged, not trusted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from search_latency import chunks, lfw_shape
from yingyan.config import EngineConfig
from yingyan.engine import Engine
from yingyan.types import Box, ModelId, Template

from _common import LFW

REPO = Path(__file__).resolve().parents[1]
GALLERY = "bench"
PLAN_FILE = "bench.json"
PLAN_VERSION = 1
BATCH = 5000
console = Console(stderr=True)
T = TypeVar("T")
Outcome = tuple[int, bool | None, str | None]  # status (0: no response), correct, error text


# --- the data folder --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screened:
    faces: int
    template: Template | None
    quality: float
    box: Box | None


def screen(engine: Engine, path: str) -> Screened:
    """Detect; embed only an image with exactly one face (as verify requires)."""
    image = engine.load(Path(path).read_bytes())
    detections = engine.detect(image)
    if len(detections) != 1:
        return Screened(len(detections), None, 0.0, None)
    face = engine.faces(image, detections)[0]
    return Screened(1, face.template, face.quality.score, face.detection.box)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the data folder holds and which images the scenarios send (paths under LFW)."""

    size: int
    real: int
    seed: int
    model: str
    shape_images: int
    enrolled: list[tuple[str, str]]  # (person, image)
    probes: list[tuple[str, str]]  # other images of enrolled people
    verify: list[tuple[str, str, bool]]  # (probe, reference, same person)
    version: int = PLAN_VERSION

    def key(self) -> tuple[int, int, int, str, int, int]:
        return (self.size, self.real, self.seed, self.model, self.shape_images, self.version)

    @staticmethod
    def load(path: Path) -> Plan | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return Plan(
            raw["size"],
            raw["real"],
            raw["seed"],
            raw["model"],
            raw["shape_images"],
            [(p, i) for p, i in raw["enrolled"]],
            [(p, i) for p, i in raw["probes"]],
            [(a, b, bool(s)) for a, b, s in raw["verify"]],
            raw["version"],
        )


def choose_real(
    real: int, config: EngineConfig, workers: int
) -> tuple[list[tuple[str, str, Screened]], list[tuple[str, str]]]:
    """`real` LFW people (spread over the alphabet) with at least two one-face images among
    their first four: the first is enrolled, the others (up to three) are probes."""
    from yingyan.batch import map_images

    people = sorted(p for p in LFW.iterdir() if p.is_dir() and len(list(p.iterdir())) > 1)
    candidates = people[:: max(1, len(people) // round(real * 1.4))]
    paths = [f for p in candidates for f in sorted(p.iterdir())[:4]]
    found = map_images(
        screen, [str(p) for p in paths], config, workers=workers, description="LFW images"
    )
    by_person: dict[str, list[tuple[str, Screened]]] = {}
    for path, result in zip(paths, found, strict=True):
        if result.template is not None:
            by_person.setdefault(path.parent.name, []).append(
                (path.relative_to(LFW).as_posix(), result)
            )
    chosen = [(p, imgs) for p, imgs in sorted(by_person.items()) if len(imgs) > 1][:real]
    if len(chosen) < real:
        raise SystemExit(f"only {len(chosen)} LFW people have two one-face images; lower --real")
    enrolled = [(p, imgs[0][0], imgs[0][1]) for p, imgs in chosen]
    probes = [(p, img) for p, imgs in chosen for img, _ in imgs[1:]]
    return enrolled, probes


def verify_pairs(
    enrolled: Sequence[tuple[str, str, Screened]], probes: Sequence[tuple[str, str]]
) -> list[tuple[str, str, bool]]:
    """For each enrolled person: (their probe, their enrolled image) and (the next person's
    probe, their enrolled image), alternating genuine and impostor."""
    first: dict[str, str] = {}
    for person, image in probes:
        first.setdefault(person, image)
    out = []
    for i, (person, image, _) in enumerate(enrolled):
        other = enrolled[(i + 1) % len(enrolled)][0]
        out += [(first[person], image, True), (first[other], image, False)]
    return out


def build(data: Path, args: argparse.Namespace, model: ModelId) -> Plan:
    """Fill a fresh data folder with the gallery and write its plan last."""
    from yingyan.embedding import recipe_name
    from yingyan.gallery.index import IndexSpec
    from yingyan.gallery.service import EnrollItem, GalleryService
    from yingyan.privacy import DEFAULT_KEY_FILE, key_source, open_cipher
    from yingyan.settings import Settings
    from yingyan.store import create_gallery, open_database

    settings = Settings(data_dir=data, workers=args.workers)
    config = settings.engine_config()
    started = time.perf_counter()
    console.log(f"screening LFW for {args.real} real subjects")
    enrolled, probes = choose_real(args.real, config, args.workers)
    shape = lfw_shape(LFW.parent, args.shape_images, REPO / "out" / "lfw-template-shape.npz")
    data.mkdir(parents=True, exist_ok=True)
    cipher = open_cipher(key_source(None, {}, data / DEFAULT_KEY_FILE))
    recipe = recipe_name(flip=config.flip, jitter=config.jitter)
    with open_database(None, data) as db:
        service = GalleryService(db, data / "index", IndexSpec(kind="flat"), None, cipher=cipher)
        with db.session() as s:
            create_gallery(
                s,
                name=GALLERY,
                kind="enrollment",
                purpose="service load benchmark",
                legal_basis="research evaluation on a public dataset and synthetic templates",
                model=model,
            )
        real_items = [
            EnrollItem(
                person,
                r.template,
                r.quality,
                hashlib.sha256((LFW / image).read_bytes()).hexdigest(),
                box=r.box,
                display_name=person.replace("_", " "),
            )
            for person, image, r in enrolled
            if r.template is not None
        ]
        service.enroll(GALLERY, real_items, save=False)
        synthetic = args.size - len(real_items)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("enrolling synthetic subjects", total=synthetic)
            for ids, vectors in chunks(shape, synthetic, args.seed):
                for start in range(0, len(ids), BATCH):
                    items = [
                        EnrollItem(
                            f"synthetic-{i:07d}",
                            Template(v, model, recipe),
                            1.0,
                            hashlib.sha256(f"synthetic:{args.seed}:{i}".encode()).hexdigest(),
                        )
                        for i, v in zip(
                            ids[start : start + BATCH].tolist(),
                            vectors[start : start + BATCH],
                            strict=True,
                        )
                    ]
                    service.enroll(GALLERY, items, save=False)
                    bar.advance(task, len(items))
        service.save_index(GALLERY)
        db_fp, index_fp = service.check(GALLERY)
        service.close()
        if db_fp != index_fp:
            raise SystemExit(f"index and database disagree after the build: {db_fp} {index_fp}")
    console.log(f"built {args.size:,} subjects in {time.perf_counter() - started:.0f} s")
    plan = Plan(
        args.size,
        args.real,
        args.seed,
        str(model),
        args.shape_images,
        [(p, i) for p, i, _ in enrolled],
        probes,
        verify_pairs(enrolled, probes),
    )
    (data / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=1))
    return plan


def prepare(data: Path, args: argparse.Namespace, model: ModelId) -> Plan:
    """The plan of a data folder built with these parameters, building it if needed."""
    plan = Plan.load(data / PLAN_FILE)
    wanted = (args.size, args.real, args.seed, str(model), args.shape_images, PLAN_VERSION)
    if plan is not None and plan.key() == wanted and not args.rebuild:
        console.log(f"reusing {data} ({plan.size:,} subjects, {plan.real} real)")
        return plan
    marker = data / ".building"
    if data.exists() and any(data.iterdir()):
        if not ((data / PLAN_FILE).exists() or marker.exists()):
            raise SystemExit(f"{data} holds something else: give another --data-dir")
        shutil.rmtree(data)
    data.mkdir(parents=True)
    marker.touch()
    plan = build(data, args, model)
    marker.unlink()
    return plan


# --- other load on the machine ---------------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the machine, CPU seconds of this process and its descendants),
    from /proc; NaN where /proc is not there."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    cpu = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
    parent: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    ours = {os.getpid()}
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in ours} - ours
        if not more:
            break
        ours |= more
    return busy / tick, sum(used.get(pid, 0) for pid in ours) / tick


class OtherLoad:
    """Cores used by processes outside this run (another job on the machine) while it lasts."""

    def __enter__(self) -> OtherLoad:
        self.started = time.perf_counter()
        self.before = cpu_seconds()
        self.cores = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        busy, ours = cpu_seconds()
        wall = time.perf_counter() - self.started
        self.cores = max(0.0, (busy - self.before[0]) - (ours - self.before[1])) / wall


# --- load: a closed loop of concurrent requests -----------------------------------------------


@dataclass
class Measured:
    scenario: str
    path: str
    duration: float
    latencies_ms: list[float] = field(default_factory=list)  # 2xx completed in the window
    statuses: dict[int, int] = field(default_factory=dict)  # all completed in the window
    correct: int = 0
    checked: int = 0
    warmup_failures: int = 0
    other_cores: float = float("nan")  # CPU used by processes not of this run, in cores
    driver_cores: float = float("nan")  # CPU of the process running `drive`, in cores
    errors: list[str] = field(default_factory=list)  # the first few, with their text

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def failures(self) -> int:
        return sum(self.statuses.values()) - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.duration

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def drive(
    call: Callable[[T], Awaitable[Outcome]],
    items: Sequence[T],
    *,
    scenario: str,
    path: str,
    concurrency: int,
    warmup: float,
    duration: float,
) -> Measured:
    """`concurrency` tasks each sending the next item as soon as its last answer arrived, for
    warmup + duration seconds; requests completed in the last `duration` seconds are measured."""
    begin, cpu = time.perf_counter(), time.process_time()
    start_window, end_window = begin + warmup, begin + warmup + duration
    turn = itertools.count()
    done: list[tuple[float, float, Outcome]] = []

    async def worker() -> None:
        while (start := time.perf_counter()) < end_window:
            item = items[next(turn) % len(items)]
            try:
                outcome = await call(item)
            except Exception as exc:  # a failed request is a result, not a crash
                outcome = (0, None, f"{type(exc).__name__}: {exc}")
            done.append((start, time.perf_counter(), outcome))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out = Measured(scenario, path, duration)
    out.driver_cores = (time.process_time() - cpu) / (time.perf_counter() - begin)
    statuses: Counter[int] = Counter()
    for start, end, (status, correct, error) in done:
        if error is not None and len(out.errors) < 5:
            out.errors.append(f"HTTP {status}: {error}" if status else error)
        if end < start_window:
            out.warmup_failures += not 200 <= status < 300
            continue
        if end > end_window:
            continue
        statuses[status] += 1
        if 200 <= status < 300:
            out.latencies_ms.append((end - start) * 1000)
        if correct is not None:
            out.checked += 1
            out.correct += correct
    out.statuses = dict(statuses)
    return out


def read_images(paths: set[str]) -> dict[str, bytes]:
    return {p: (LFW / p).read_bytes() for p in sorted(paths)}


def http_load(
    url: str,
    token: str,
    scenario: str,
    items: list[Any],
    concurrency: int,
    warmup: float,
    duration: float,
) -> Measured:
    """The load generator, run in its own process: the scenario over HTTP."""
    return asyncio.run(_http_load(url, token, scenario, items, concurrency, warmup, duration))


async def _http_load(
    url: str,
    token: str,
    scenario: str,
    items: list[Any],
    concurrency: int,
    warmup: float,
    duration: float,
) -> Measured:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"x-api-key": token}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=120
    ) as client:
        if scenario == "verify":
            images = read_images({a for a, _, _ in items} | {b for _, b, _ in items})

            async def verify(item: tuple[str, str, bool]) -> Outcome:
                probe, reference, same = item
                files = {
                    "probe": ("probe.jpg", images[probe], "image/jpeg"),
                    "reference": ("reference.jpg", images[reference], "image/jpeg"),
                }
                r = await client.post("/api/v1/verify", files=files)
                if r.status_code != 200:
                    return r.status_code, None, r.text[:300]
                return r.status_code, r.json()["match"] == same, None

            return await drive(
                verify,
                items,
                scenario="verify",
                path="service (HTTP)",
                concurrency=concurrency,
                warmup=warmup,
                duration=duration,
            )
        images = read_images({p for _, p in items})

        async def identify(item: tuple[str, str]) -> Outcome:
            person, probe = item
            files = {"probe": ("probe.jpg", images[probe], "image/jpeg")}
            r = await client.post(
                f"/api/v1/galleries/{GALLERY}/identify", params={"k": 10}, files=files
            )
            if r.status_code != 200:
                return r.status_code, None, r.text[:300]
            faces = r.json()["faces"]
            top = faces[0]["candidates"][:1] if faces else []
            return r.status_code, bool(top) and top[0]["external_id"] == person, None

        return await drive(
            identify,
            items,
            scenario="identify",
            path="service (HTTP)",
            concurrency=concurrency,
            warmup=warmup,
            duration=duration,
        )


async def direct_load(
    plan: Plan, data: Path, args: argparse.Namespace, scenarios: list[str]
) -> list[Measured]:
    """The same requests without HTTP: the service's inference pool and gallery service."""
    from yingyan.api.inference import InferencePool
    from yingyan.comparison import compare
    from yingyan.comparison.thresholds import default_threshold
    from yingyan.gallery.index import IndexSpec
    from yingyan.gallery.service import GalleryService
    from yingyan.privacy import DEFAULT_KEY_FILE, key_source, open_cipher
    from yingyan.settings import Settings
    from yingyan.store import open_database

    settings = Settings(data_dir=data, workers=args.workers)
    cipher = open_cipher(key_source(None, {}, data / DEFAULT_KEY_FILE))
    pool = InferencePool(settings.engine_config(), settings.workers, settings.max_faces)
    lock = threading.Lock()
    out = []
    with open_database(None, data) as db:
        service = GalleryService(db, data / "index", IndexSpec(kind="flat"), None, cipher=cipher)
        try:
            info = await pool.start()
            if str(info.model) != plan.model:
                raise SystemExit(f"the engine runs {info.model}, the gallery holds {plan.model}")
            threshold = default_threshold(str(info.model).split("@")[0]).score
            images = read_images(
                {a for a, _, _ in plan.verify}
                | {b for _, b, _ in plan.verify}
                | {p for _, p in plan.probes}
            )

            async def verify(item: tuple[str, str, bool]) -> Outcome:
                probe_image, reference_image, same = item
                probe = (await pool.faces(images[probe_image], policy="single"))[0]
                reference = (await pool.faces(images[reference_image], policy="single"))[0]
                assert probe.template is not None and reference.template is not None
                score = compare(probe.template, reference.template).score
                return 200, (score >= threshold) == same, None

            def search(templates: list[Template]) -> list[Any]:
                with lock:
                    return service.identify(GALLERY, templates, k=10, mode="investigation")

            async def identify(item: tuple[str, str]) -> Outcome:
                person, probe = item
                found = await pool.faces(images[probe], policy="largest")
                templates = [f.template for f in found if f.template is not None]
                results = await asyncio.to_thread(search, templates)
                top = results[0][:1] if results else []
                return 200, bool(top) and top[0].external_id == person, None

            for scenario in scenarios:
                console.log(f"direct: {scenario}")
                call: Callable[[Any], Awaitable[Outcome]] = (
                    verify if scenario == "verify" else identify
                )
                items: list[Any] = plan.verify if scenario == "verify" else plan.probes
                with OtherLoad() as other:
                    measured = await drive(
                        call,
                        items,
                        scenario=scenario,
                        path="direct (in-process)",
                        concurrency=args.concurrency,
                        warmup=args.warmup,
                        duration=args.duration,
                    )
                measured.other_cores = other.cores
                out.append(measured)
        finally:
            pool.close()
            service.close()
    return out


# --- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "yingyan.cli.main", *args],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=REPO,
    )
    return done.stdout


def clean_env() -> dict[str, str]:
    """This environment without service settings, so the data folder alone decides."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("YINGYAN_") or k == "YINGYAN_SHARED"
    }


class Server:
    """`yingyan serve` in a subprocess, its output in a log file."""

    def __init__(self, data: Path, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--data-dir", str(data)]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--host", "127.0.0.1"]
        with log.open("w") as sink:
            self.proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO
            )

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:]
                raise SystemExit(f"the server exited ({self.proc.returncode}):\n{tail}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server was not ready within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                console.log("the server did not stop on SIGINT within 60 s: terminating it")
                self.proc.terminate()
                self.proc.wait(30)


def service_load(
    plan: Plan, data: Path, args: argparse.Namespace, scenarios: list[str]
) -> tuple[list[Measured], Path]:
    log = data / "server.log"
    server = Server(data, args.workers, log)
    prefix = None
    try:
        console.log(f"yingyan serve --workers {args.workers} on {server.url}: starting")
        console.log(f"ready in {server.wait_ready():.1f} s")
        # The first start of a folder writes an admin token to a file; this run needs none.
        (data / "initial-admin-key").unlink(missing_ok=True)
        create = ["keys", "create", "--role", "operator", "--name", "service_load benchmark"]
        issued = json.loads(cli(*create, "--gallery", GALLERY, "--json", "--data-dir", str(data)))
        prefix, token = issued["key"]["prefix"], issued["token"]
        spawn = multiprocessing.get_context("spawn")
        out = []
        with ProcessPoolExecutor(1, mp_context=spawn) as generator:
            for scenario in scenarios:
                console.log(f"service: {scenario}")
                items: list[Any] = plan.verify if scenario == "verify" else plan.probes
                job = generator.submit(
                    http_load,
                    server.url,
                    token,
                    scenario,
                    items,
                    args.concurrency,
                    args.warmup,
                    args.duration,
                )
                with OtherLoad() as other:
                    measured = job.result()
                measured.other_cores = other.cores
                out.append(measured)
        return out, log
    finally:
        if prefix is not None:
            cli("keys", "revoke", prefix, "--data-dir", str(data))
        server.stop()


@dataclass
class LogReport:
    lines: int
    requests: Counter[tuple[str, int]]
    server_ms: dict[str, list[float]]
    problems: list[str]


def scan_log(path: Path) -> LogReport:
    """Request lines by route and status, and every line that is not a plain info line."""
    requests: Counter[tuple[str, int]] = Counter()
    server_ms: dict[str, list[float]] = {}
    problems = []
    lines = path.read_text(errors="replace").splitlines()
    words = ("error", "exception", "traceback", "locked", "timeout", "warning")
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            if any(w in line.lower() for w in words):
                problems.append(line)
            continue
        if entry.get("message") == "request":
            requests[(entry["route"], int(entry["status"]))] += 1
            server_ms.setdefault(entry["route"], []).append(float(entry["ms"]))
        if entry.get("level") not in ("info", "debug") or "locked" in line:
            problems.append(line)
    return LogReport(len(lines), requests, server_ms, problems)


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model})"


NAMES = {"verify": "verify (2 images)", "identify": "identify k=10"}


def report(
    plan: Plan, args: argparse.Namespace, rows: list[Measured], log: LogReport, log_path: Path
) -> None:
    print(
        f"\nService load on {machine()}; gallery of {plan.size:,} subjects ({plan.real} real LFW,"
        f" {plan.size - plan.real:,} synthetic), flat FAISS, encrypted; concurrency "
        f"{args.concurrency}, {args.warmup:g} s warm-up + {args.duration:g} s per scenario; "
        f"`yingyan serve --workers {args.workers}`. Generator: {args.concurrency} asyncio tasks "
        "with httpx in one separate process on the same machine (it shares the cores with the "
        "server and its inference workers). Direct: the same requests in-process, no HTTP.\n"
    )
    print(
        "| scenario | path | requests/s | p50 ms | p95 ms | p99 ms | requests | non-2xx "
        "| correct | other load |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        share = f"{r.correct / r.checked:.3f}" if r.checked else "-"
        print(
            f"| {NAMES[r.scenario]} | {r.path} | {r.rate:.2f} | {r.percentile(50):.0f} "
            f"| {r.percentile(95):.0f} | {r.percentile(99):.0f} | {r.ok} | {r.failures} "
            f"| {share} | {r.other_cores:.2f} |"
        )
    print(
        "\ncorrect: verify, match == same person at the default threshold (genuine and impostor "
        "pairs alternate); identify, the probe's person ranked first. other load: cores busy "
        "with processes outside this run during the scenario (another job on the machine)."
    )
    busy = [r for r in rows if r.other_cores > 0.1]
    if busy:
        print(
            f"- WARNING: other processes used up to {max(r.other_cores for r in busy):.2f} "
            "cores during "
            + ", ".join(f"{r.scenario} {r.path}" for r in busy)
            + ": those figures are low and the ratios unreliable; rerun on a quiet machine"
        )
    for scenario in NAMES:
        pair = {r.path: r for r in rows if r.scenario == scenario}
        service, direct = pair.get("service (HTTP)"), pair.get("direct (in-process)")
        if service and direct:
            print(
                f"- {scenario}: service/direct requests/s = {service.rate / direct.rate:.2f}x; "
                f"p95 {service.percentile(95):.0f} vs {direct.percentile(95):.0f} ms"
            )
    for r in rows:
        what = "the load generator process" if r.path.startswith("service") else "this process"
        print(f"- {r.scenario} {r.path}: {what} used {r.driver_cores:.2f} cores")
    for route, ms in sorted(log.server_ms.items()):
        if route.endswith(("/verify", "/identify")):
            p50, p95 = np.percentile(ms, [50, 95])
            print(
                f"- server-side latency (access log, warm-up included) {route}: "
                f"p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(ms)} requests"
            )
    failures = [r for r in rows if r.failures or r.warmup_failures or r.errors]
    statuses = ", ".join(f"{route} {s}: {n}" for (route, s), n in sorted(log.requests.items()))
    print(f"- server log {log_path} ({log.lines} lines): {statuses}")
    if log.problems:
        print(f"- {len(log.problems)} server log lines that are not plain info lines, e.g.:")
        for line in log.problems[:20]:
            print(f"    {line[:400]}")
    else:
        print("- no error, warning or 'database is locked' line in the server log")
    for r in failures:
        print(
            f"- {r.scenario} {r.path}: {r.failures} failed in the window, {r.warmup_failures} "
            f"in warm-up, statuses {r.statuses}; e.g. {r.errors[:3]}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000, help="subjects in the gallery")
    ap.add_argument("--real", type=int, default=300, help="real LFW subjects among them")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before")
    ap.add_argument("--workers", type=int, default=2, help="inference processes")
    ap.add_argument("--scenarios", default="verify,identify")
    ap.add_argument("--shape-images", type=int, default=2000, help="LFW images to fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None, help="default out/bench-service-<k>")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the data folder")
    args = ap.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW not found under {LFW}; set YINGYAN_SHARED")
    label = f"{args.size // 1000}k" if args.size % 1000 == 0 else str(args.size)
    data = (args.data_dir or REPO / "out" / f"bench-service-{label}").resolve()
    scenarios = args.scenarios.split(",")
    plan = prepare(data, args, Engine().model_id)
    rows, log_path = service_load(plan, data, args, scenarios)
    rows += asyncio.run(direct_load(plan, data, args, scenarios))
    rows.sort(key=lambda r: (scenarios.index(r.scenario), r.path != "service (HTTP)"))
    report(plan, args, rows, scan_log(log_path), log_path)


if __name__ == "__main__":
    main()
