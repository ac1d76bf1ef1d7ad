"""Reliability under concurrent writers and a crash: the service, the CLI and another process
on one gallery, on SQLite or PostgreSQL, for this tree and for a baseline tree in the same run.

    python benchmarks/reliability.py [--backend sqlite|postgresql] [--clients 6] [--minutes 2]
        [--database-url URL] [--baseline-rev 1cfe48e] [--no-baseline]

Phase 1 (load): `yingyan serve --workers 2` as a subprocess on a fresh data folder. `--clients`
threads with keep-alive httpx clients run a closed loop of mixed requests for `--minutes`:
enrol a face for a new subject (real LFW images, one person per subject), erase one of their
own acknowledged subjects, identify, verify a subject, create and delete a gallery. Meanwhile,
as other processes on the same gallery: `yingyan enroll` of a manifest of LFW images, and
`yingyan retention run` erasing subjects whose consent has ended (created at seeding with a
consent that ends during the run), and `yingyan keys create` in a loop. Figures: responses by
status (5xx must be 0), acts acknowledged by the API vs their audit entries (equal), the
gallery's index file as stored vs the database's templates (equal, after one search has let
the server catch up), and the audit chain.

Phase 2 (crash): enrolment and erasure requests again, and the server (with its inference
workers) is killed with SIGKILL while they are in flight; then restarted. Checks: the audit
chain verifies; every acknowledged enrolment is in the database and every template in the
database has its `face.enroll` entry (no act without its entry, whether or not it was
acknowledged); no acknowledged erasure has come back, in the database or in the index file.

Baseline: the same two phases against the tree at `--baseline-rev` (exported with
`git archive` into a temporary folder and run with its own `src/` first on the path), i.e. the
code before the unit of work, immediate SQLite transactions and the change log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service_load import OtherLoad

from _common import lfw_images

ROOT = Path(__file__).resolve().parents[1]
GALLERY = "bench"


@dataclass
class Acks:
    """What the API acknowledged (2xx) and what every response was."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    acts: Counter[str] = field(default_factory=Counter)  # operation -> acknowledged count
    enrolled: dict[int, str] = field(default_factory=dict)  # template id -> subject
    erased: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, op: str, r: httpx.Response) -> bool:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code >= 500:
                self.errors.append(f"{op}: {r.status_code} {r.text[:200]}")
            ok = r.status_code < 300
            if ok and op:
                self.acts[op] += 1
            return ok


class Tree:
    """A source tree to run: this checkout, or a baseline exported from git."""

    def __init__(self, src: Path, label: str) -> None:
        self.src, self.label = src, label

    def env(self, data: Path, url: str | None) -> dict[str, str]:
        env = os.environ | {
            "PYTHONPATH": str(self.src),
            "YINGYAN_WORKERS": "2",
            "YINGYAN_LOG_JSON": "false",
            "YINGYAN_DATA_DIR": str(data),
        }
        if url:
            env["YINGYAN_DATABASE_URL"] = url
        return env

    def cli(self, data: Path, url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        where = ["--data-dir", str(data)] + (["--database-url", url] if url else [])
        cmd = [sys.executable, "-m", "yingyan.cli.main", *args, *where]
        return subprocess.run(
            cmd, env=self.env(data, url), capture_output=True, text=True, timeout=900
        )

    def serve(self, data: Path, url: str | None, port: int) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "yingyan.cli.main", "serve", "--port", str(port)]
        log = (data.parent / f"serve-{self.label}-{port}.log").open("a")
        process = subprocess.Popen(
            [*cmd, "--data-dir", str(data)],
            env=self.env(data, url),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: SIGKILL takes the workers too
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(480):
            if process.poll() is not None:
                raise SystemExit(f"{self.label}: server exited, see {log.name}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.label}: server not ready after 240 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(path: Path, field_name: str) -> dict[str, tuple[str, bytes, str]]:
    return {field_name: (path.name, path.read_bytes(), "image/jpeg")}


def enrol(http: httpx.Client, acks: Acks, subject: str, image: Path, **extra: Any) -> None:
    body = {"external_id": subject} | extra
    if not acks.note(
        "subject.create", http.post(f"/api/v1/galleries/{GALLERY}/subjects", json=body)
    ):
        return
    r = http.post(
        f"/api/v1/galleries/{GALLERY}/subjects/{subject}/faces", files=jpeg(image, "image")
    )
    if acks.note("face.enroll", r):
        with acks.lock:
            acks.enrolled[int(r.json()["template_id"])] = subject


def erase(http: httpx.Client, acks: Acks, subject: str) -> None:
    r = http.delete(f"/api/v1/galleries/{GALLERY}/subjects/{subject}")
    if acks.note("subject.erase", r):
        with acks.lock:
            acks.erased.add(subject)


def client_loop(
    n: int, base: str, key: str, images: list[Path], probe: Path, until: float, acks: Acks
) -> None:
    rng = random.Random(n)
    mine: list[str] = []
    with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=300) as http:
        i = 0
        while time.monotonic() < until:
            op = rng.choices(
                ["enrol", "erase", "identify", "verify", "gallery"], [35, 15, 25, 15, 5]
            )[0]
            try:
                if op == "enrol":
                    subject = f"c{n}-{i}"
                    i += 1
                    enrol(http, acks, subject, images[(n * 7919 + i) % len(images)])
                    mine.append(subject)
                elif op == "erase" and mine:
                    erase(http, acks, mine.pop(rng.randrange(len(mine))))
                elif op == "identify":
                    r = http.post(
                        f"/api/v1/galleries/{GALLERY}/identify", files=jpeg(probe, "probe")
                    )
                    acks.note("", r)
                elif op == "verify":
                    r = http.post(
                        f"/api/v1/galleries/{GALLERY}/subjects/seed0/verify",
                        files=jpeg(probe, "probe"),
                    )
                    acks.note("", r)
                elif op == "gallery":
                    name = f"tmp{n}-{i}"
                    body = {"name": name, "purpose": "bench", "legal_basis": "bench"}
                    if acks.note("gallery.create", http.post("/api/v1/galleries", json=body)):
                        acks.note("gallery.delete", http.delete(f"/api/v1/galleries/{name}"))
            except httpx.TransportError as exc:
                with acks.lock:
                    acks.errors.append(f"{op}: transport {exc!r}")


def run_script(tree: Tree, data: Path, url: str | None, script: str, *args: str) -> Any:
    """Run `script` with the tree's own library (argv: url, data folder, `args`); its JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, url or "", str(data), *args],
        env=tree.env(data, url),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout)


def audit_counts(
    tree: Tree, data: Path, url: str | None, actor: str
) -> tuple[bool, Counter[str], list[dict[str, Any]]]:
    """(chain ok, ok entries of actors starting with `actor` by operation, every face.enroll
    entry), read through the tree's own library in a subprocess (its schema may differ)."""
    script = """
import json, sys
from pathlib import Path
from sqlalchemy import select
from yingyan.store import open_database
from yingyan.store.tables import AuditEntryRow
from yingyan.audit import verify
db = open_database(sys.argv[1] or None, Path(sys.argv[2]))
with db.session() as s:
    ok = verify(s).ok
    rows = [(r.actor, r.operation, r.outcome, r.details) for r in s.scalars(select(AuditEntryRow))]
print(json.dumps({"ok": ok, "rows": rows}))
"""
    body = run_script(tree, data, url, script)
    counts = Counter(
        op for a, op, outcome, _ in body["rows"] if a.startswith(actor) and outcome == "ok"
    )
    enrols = [d for _, op, outcome, d in body["rows"] if op == "face.enroll" and outcome == "ok"]
    return body["ok"], counts, enrols


def db_state(tree: Tree, data: Path, url: str | None) -> dict[str, Any]:
    """Template ids and subjects of the gallery, and the ids its index file holds as stored."""
    script = """
import json, sys
from pathlib import Path
import faiss, numpy as np
from sqlalchemy import select
from yingyan.store import open_database, GalleryRow, SubjectRow, TemplateRow
from yingyan.privacy import open_cipher, key_source
from yingyan.privacy.cipher import MAGIC, index_context
data = Path(sys.argv[2])
db = open_database(sys.argv[1] or None, data)
with db.session() as s:
    g = s.scalar(select(GalleryRow).where(GalleryRow.name == sys.argv[3]))
    rows = s.execute(
        select(TemplateRow.id, SubjectRow.external_id)
        .join(SubjectRow, SubjectRow.id == TemplateRow.subject_id)
        .where(TemplateRow.gallery_id == g.id)
    ).all()
    ids = sorted(int(t) for t, _ in rows)
    owner = {int(t): e for t, e in rows}
    where = SubjectRow.gallery_id == g.id
    subjects = sorted(s.scalars(select(SubjectRow.external_id).where(where)))
    gid = g.id
stored = None
files = sorted((data / "index").glob(f"gallery-{gid}-*.faiss"))
if files:
    blob = files[0].read_bytes()
    if blob.startswith(MAGIC):
        cipher = open_cipher(key_source(None, {}, data / "template-keys.json"))
        blob = cipher.decrypt(blob, index_context(files[0].name))
    index = faiss.deserialize_index(np.frombuffer(blob, np.uint8))
    stored = sorted(int(i) for i in faiss.vector_to_array(index.id_map))
print(json.dumps({"ids": ids, "subjects": subjects, "stored": stored, "owner": owner}))
"""
    return run_script(tree, data, url, script, GALLERY)


def run(
    tree: Tree, url: str | None, clients: int, minutes: float, images: list[Path]
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"yy-rel-{tree.label}-"))
    data = work / "data"
    if url:  # a fresh schema for each tree
        fresh_postgres(url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = tree.serve(data, url, port)
    admin = (data / "initial-admin-key").read_text().strip()
    acks = Acks()
    probe = images[0]
    seeds, manifest_images, rest = images[:20], images[20:40], images[40:]
    with httpx.Client(base_url=base, headers={"x-api-key": admin}, timeout=300) as http:
        body = {"name": GALLERY, "purpose": "reliability benchmark", "legal_basis": "test"}
        assert acks.note("gallery.create", http.post("/api/v1/galleries", json=body))
        ends = time.time() + 20  # consent of seed10.. ends during the run
        until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ends))
        for i, image in enumerate(seeds):
            consent = (
                {"consent": {"purpose": "bench", "reference": "r", "expires_at": until}}
                if i >= 10
                else {}
            )
            enrol(http, acks, f"seed{i}", image, **consent)
    manifest = work / "manifest.csv"
    manifest.write_text(
        "external_id,image\n" + "".join(f"cli{i},{p}\n" for i, p in enumerate(manifest_images))
    )
    started = time.monotonic()
    stop = started + 60 * minutes
    side: dict[str, Any] = {"keys": 0}

    def cli_side() -> None:
        out = tree.cli(data, url, "enroll", "--gallery", GALLERY, "--manifest", str(manifest))
        side["enroll"] = (out.returncode, out.stdout.strip()[-200:] or out.stderr.strip()[-300:])
        while time.time() < ends + 1:
            time.sleep(0.5)
        out = tree.cli(data, url, "retention", "run")
        side["retention"] = (out.returncode, out.stdout.strip()[-200:] or out.stderr.strip()[-300:])
        while time.monotonic() < stop:
            out = tree.cli(
                data, url, "keys", "create", "--name", f"k{side['keys']}", "--role", "operator"
            )
            side["keys"] += out.returncode == 0

    with OtherLoad() as other:
        threads = [
            threading.Thread(target=client_loop, args=(n, base, admin, rest, probe, stop, acks))
            for n in range(clients)
        ] + [threading.Thread(target=cli_side)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    load_seconds = time.monotonic() - started
    with httpx.Client(base_url=base, headers={"x-api-key": admin}, timeout=300) as http:
        # What the CLI enrolled while the server ran must be found by the server.
        r = http.post(
            f"/api/v1/galleries/{GALLERY}/identify", files=jpeg(manifest_images[0], "probe")
        )
        acks.note("", r)
        found = r.json()["faces"][0]["candidates"] if r.status_code == 200 else []
        cli_found = bool(found) and found[0]["external_id"] == "cli0"
    ok, counts, _ = audit_counts(tree, data, url, "key:")
    state = db_state(tree, data, url)
    api_acts = sum(acks.acts.values())
    audited = sum(counts[op] for op in acks.acts)
    phase1 = {
        "seconds": round(load_seconds, 1),
        "responses": dict(sorted(acks.statuses.items())),
        "5xx": sum(n for s, n in acks.statuses.items() if s >= 500),
        "transport_errors": sum(1 for e in acks.errors if "transport" in e),
        "acts_acknowledged": api_acts,
        "acts_audited": audited,
        "by_operation": {op: [acks.acts[op], counts[op]] for op in sorted(acks.acts)},
        "server_finds_cli_enrolment": cli_found,
        "index_equals_database": state["stored"] == state["ids"],
        "index_stored_vs_db": [len(state["stored"] or []), len(state["ids"])],
        "chain_ok": ok,
        "cli": side,
        "other_load_cores": round(other.cores, 2),
        "first_errors": acks.errors[:3],
    }
    # Phase 2: a crash during writes.
    crash = Acks()
    kill_at = time.monotonic() + 15
    crash_threads = [
        threading.Thread(
            target=crash_loop, args=(n, base, admin, rest[200 + 50 * n :], kill_at + 30, crash)
        )
        for n in range(clients)
    ]
    for t in crash_threads:
        t.start()
    while time.monotonic() < kill_at:
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    for t in crash_threads:
        t.join()
    server = tree.serve(data, url, port)
    with httpx.Client(base_url=base, headers={"x-api-key": admin}, timeout=300) as http:
        http.post(f"/api/v1/galleries/{GALLERY}/identify", files=jpeg(probe, "probe"))
    server.terminate()
    server.wait(timeout=60)
    ok2, _, enrols = audit_counts(tree, data, url, "")
    after = db_state(tree, data, url)
    audited_ids = {int(d["template_id"]) for d in enrols if "template_id" in d}
    audited_ids |= {int(t) for d in enrols for t in d.get("template_ids", [])}
    acked = set(acks.enrolled) | set(crash.enrolled)
    erased = acks.erased | crash.erased | {f"seed{i}" for i in range(10, 20)}
    live = set(after["ids"])
    came_back = erased & set(after["subjects"])
    erased_ids = {t for t, s in (acks.enrolled | crash.enrolled).items() if s in erased}
    phase2 = {
        "acknowledged_before_kill": len(crash.enrolled) + len(crash.erased),
        "chain_ok": ok2,
        "acknowledged_enrolments_missing": len({t for t in acked if t not in erased_ids} - live),
        # The CLI's bulk enrolment is audited per batch here and once in all by the baseline:
        # only templates enrolled through the API are compared.
        "templates_without_entry": len(
            {t for t in live - audited_ids if not after["owner"][str(t)].startswith("cli")}
        ),
        "erased_subjects_back": sorted(came_back)[:5],
        "erased_vectors_in_index": len(erased_ids & set(after["stored"] or [])),
        "index_equals_database": after["stored"] == after["ids"],
    }
    return {"tree": tree.label, "phase1": phase1, "phase2": phase2, "work": str(work)}


def crash_loop(n: int, base: str, key: str, images: list[Path], until: float, acks: Acks) -> None:
    """Enrol and erase until the server is gone (transport errors end it)."""
    mine: list[str] = []
    with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=60) as http:
        for i, image in enumerate(images):
            if time.monotonic() > until:
                return
            try:
                subject = f"k{n}-{i}"
                enrol(http, acks, subject, image)
                mine.append(subject)
                if i % 3 == 2:
                    erase(http, acks, mine.pop(0))
            except httpx.TransportError:
                return


def fresh_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    from yingyan.store.database import database_url

    engine = create_engine(database_url(url, Path(".")))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


def baseline_tree(rev: str) -> Tree:
    folder = Path(tempfile.mkdtemp(prefix="yy-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return Tree(folder / "src", f"baseline@{rev}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--baseline-rev", default="1cfe48e")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    url = args.database_url if args.backend == "postgresql" else None
    images = lfw_images(40 + 200 + 50 * args.clients + 400)
    trees = [Tree(ROOT / "src", "this tree")]
    if not args.no_baseline:
        trees.append(baseline_tree(args.baseline_rev))
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores; backend {args.backend}; "
        f"{args.clients} clients for {args.minutes} min"
    )
    results = []
    for tree in trees:
        result = run(tree, url, args.clients, args.minutes, images)
        results.append(result)
        p1, p2 = result["phase1"], result["phase2"]
        print(f"\n== {tree.label} ==")
        print(
            f"load {p1['seconds']} s: responses {p1['responses']}, 5xx {p1['5xx']}, "
            f"transport errors {p1['transport_errors']}"
        )
        print(
            f"  acts acknowledged {p1['acts_acknowledged']}, audited {p1['acts_audited']} "
            f"{p1['by_operation']}"
        )
        print(
            f"  index as stored == database: {p1['index_equals_database']} "
            f"(stored {p1['index_stored_vs_db'][0]}, db {p1['index_stored_vs_db'][1]}); "
            f"chain ok {p1['chain_ok']}; server finds what the CLI enrolled: "
            f"{p1['server_finds_cli_enrolment']}; CLI {p1['cli']}"
        )
        print(
            f"  other load on the machine: {p1['other_load_cores']} cores; "
            f"first errors {p1['first_errors']}"
        )
        print(
            f"SIGKILL during writes: acknowledged {p2['acknowledged_before_kill']}, "
            f"chain ok {p2['chain_ok']}, "
            f"acknowledged enrolments missing {p2['acknowledged_enrolments_missing']}, "
            f"templates without audit entry {p2['templates_without_entry']}, "
            f"erased subjects back {p2['erased_subjects_back']}, erased vectors in index "
            f"{p2['erased_vectors_in_index']}, index == database {p2['index_equals_database']}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
