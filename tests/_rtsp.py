"""A real RTSP camera for the stream-fault tests: the distribution's GStreamer RTSP server
(`scripts/rtsp_server.py`, run with the system Python, which has `gi`), started on a free port
and killed and restarted by the tests. Skips without it, fails under CI=true."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RTSP_SERVER = PROJECT_ROOT / "scripts" / "rtsp_server.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
CEILING_S = 30.0  # never a timing bound: only how long a broken server may take to fail a test


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _first_line(process: subprocess.Popen[str]) -> str:
    """The process's first line of output, or "" if it prints none within the ceiling."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(CEILING_S)
    return lines[0] if lines else ""


def start_rtsp(port: int, clip: Path) -> subprocess.Popen[str]:
    """The GStreamer RTSP server on `port`, once it prints `ready` (retried while the port is
    still held by the killed one)."""
    for _ in range(20):
        server = subprocess.Popen(
            [str(SYSTEM_PYTHON), str(RTSP_SERVER), "--port", str(port), "--file", str(clip)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if _first_line(server).startswith("ready"):
            return server
        server.kill()
        server.wait()
        time.sleep(0.25)
    pytest.fail(f"the RTSP server did not start on port {port}")


def require_rtsp_server() -> None:
    """Skip (fail under CI=true) when GStreamer's RTSP server is not installed."""
    check = "import gi; gi.require_version('GstRtspServer', '1.0')"
    if (
        not SYSTEM_PYTHON.exists()
        or subprocess.run(
            [str(SYSTEM_PYTHON), "-c", check], capture_output=True, check=False
        ).returncode
    ):
        reason = "GStreamer's RTSP server is not installed: bash scripts/install-video-test-deps.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
