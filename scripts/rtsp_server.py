#!/usr/bin/python3
"""A real RTSP camera for the stream-fault tests: serves an H.264 MP4 clip with the
distribution's GStreamer RTSP server.

Run it with /usr/bin/python3 (it has `gi`; the project's venv does not need it):

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --file CLIP.mp4 [--mount /cam]

It prints `ready` once it listens. Every client gets its own pipeline from the clip's start (the
factory is not shared), so a client that reconnects after the server was killed and restarted
gets a fresh session, as from a rebooted camera. The clip is played once per session; tests need
only a few seconds of it. `scripts/install-video-test-deps.sh` installs what it needs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def _launch_line(clip: Path) -> str:
    location = str(clip).replace("\\", "\\\\").replace('"', '\\"')
    return f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True, help="an H.264 MP4 clip")
    parser.add_argument("--mount", default="/cam")
    args = parser.parse_args()
    if not args.file.is_file():
        print(f"rtsp_server: no such file: {args.file}", file=sys.stderr)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(args.file.resolve()))
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
