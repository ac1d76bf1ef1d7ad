#!/usr/bin/env bash
# Installs the distribution's GStreamer RTSP server (with python3-gi) that the video stream-fault
# tests start as a real RTSP camera (scripts/rtsp_server.py, run by /usr/bin/python3). Idempotent:
# does nothing when GstRtspServer is already importable. Needs root (apt-get) on Debian/Ubuntu.
set -euo pipefail

PY=/usr/bin/python3
PACKAGES=(gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-plugins-base)

have_rtsp_server() {
    [ -x "$PY" ] && "$PY" -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null
}

if have_rtsp_server; then
    echo "install-video-test-deps: GstRtspServer already available to $PY"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-video-test-deps: no apt-get here; install ${PACKAGES[*]} by hand" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-video-test-deps: apt-get install ${PACKAGES[*]}"
if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"; then
    echo "install-video-test-deps: install failed; running apt-get update and retrying"
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

if have_rtsp_server; then
    echo "install-video-test-deps: GstRtspServer now available to $PY"
else
    echo "install-video-test-deps: GstRtspServer still not importable by $PY" >&2
    exit 1
fi
