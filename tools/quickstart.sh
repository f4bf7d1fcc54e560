#!/usr/bin/env bash
# facecast quickstart: set everything up, then run the main job or the whole test suite.
#
#   bash tools/quickstart.sh demo     # set up, then run the main job: facecast serve (see README)
#   bash tools/quickstart.sh offline  # set up, render out/demo.mp4 and the rig/renderer previews
#   bash tools/quickstart.sh test     # set up, then run the whole test suite
#
# Safe to run again: system packages are installed only when missing, the virtual environment
# (.venv) is reused, and pip runs only when requirements.lock or pyproject.toml changed.
# Environment: PYTHON=/path/to/python3.X picks the interpreter (3.11-3.12; mediapipe 0.10.21 has
# no wheels for newer ones, pipecat's onnxruntime none for older); FACECAST_VENV=DIR puts the environment elsewhere.
set -euo pipefail

mode="${1:-demo}"
case "$mode" in demo|offline|test|setup) ;; *) echo "usage: $0 demo|offline|test|setup" >&2; exit 2 ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${FACECAST_VENV:-$root/.venv}"

# Debian/Ubuntu packages the project needs (grows as features arrive).
# PyAudio (facecast cam / devices) builds against PortAudio: portaudio19-dev and a C compiler;
# libasound2-plugins lets PortAudio's ALSA backend reach PulseAudio/PipeWire microphones.
apt_packages=(python3-venv libespeak-ng1 espeak-ng-data asterisk-core-sounds-en-g722
              portaudio19-dev libasound2-plugins gcc)
# The test suite also drives the web widget in a real browser (Playwright with Debian's chromium),
# captures real speech through PortAudio from a private PulseAudio null sink, and opens the
# preview window under Xvfb.
if [ "$mode" = test ]; then apt_packages+=(chromium pulseaudio pulseaudio-utils xvfb); fi

log() { printf '[quickstart] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

pick_python() {
  local candidates=("${PYTHON:-}" python3.12 python3.11 python3) c
  for c in "${candidates[@]}"; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  log "no Python 3.11-3.12 found (set PYTHON=/path/to/python3.X)"; return 1
}

ensure_system_packages() {
  command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 || return 0
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # python3-venv only matters for Debian's own python3; a pyenv/python.org build has ensurepip.
  if "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    local keep=()
    for p in "${missing[@]}"; do [ "$p" = python3-venv ] || keep+=("$p"); done
    missing=("${keep[@]}")
  fi
  # building PyAudio needs the interpreter's headers: Debian's python3 has them in python3-dev
  if ! "$py" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    dpkg-query -W -f='${Status}' python3-dev 2>/dev/null | grep -q "install ok installed" || missing+=(python3-dev)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    log "creating virtual environment $venv with $("$py" --version)"
    "$py" -m venv "$venv"
  fi
  local stamp="$venv/.facecast-installed" want
  want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
  [ "$mode" = test ] && want="$want-torch"
  if [ -f "$stamp" ] && grep -qx -- "$want" "$stamp" && "$venv/bin/python" -c 'import avatars' 2>/dev/null; then
    return 0
  fi
  local base="${want%-torch}"
  log "installing pinned Python packages (requirements.lock)"
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install -r requirements.lock
  "${pip[@]}" install --no-deps "mediapipe==0.10.21"
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  echo "$base" > "$stamp"
  if [ "$mode" = test ]; then
    # training code is tested too (a tiny run): torch, CPU build, training/export only
    "${pip[@]}" install "torch==2.13.0"
    echo "$base-torch" >> "$stamp"
  fi
}

py="$(pick_python)"
ensure_system_packages
ensure_venv
export PATH="$venv/bin:$PATH"

case "$mode" in
  setup)
    log "environment ready: source $venv/bin/activate" ;;
  demo)
    log "starting facecast serve on the default avatar: open http://127.0.0.1:8765/ in a browser"
    log "(type a sentence and press Speak, or switch the microphone on; Ctrl-C stops the server)"
    exec facecast serve --avatar default --port "${FACECAST_PORT:-8765}" ;;
  offline)
    mkdir -p out
    log "rendering the default avatar speaking a sentence (espeak-ng -> motion model -> renderer -> MP4)"
    facecast render --avatar default --out out/demo.mp4 \
      --text "Hello, I am the facecast demo avatar. I speak any text you give me, with my lips in sync and a blink now and then."
    log "checking lip sync of out/demo.mp4 with mediapipe (independent of our models)"
    facecast eval sync out/demo.mp4
    log "enrolling the bundled portrait as avatar 'demo' (mediapipe Face Mesh)"
    facecast enroll avatars/default/image.png --name demo --out out/avatars --force \
      --consent "public-domain NASA portrait (demo)" --licence "public domain" \
      --attribution "NASA, via scikit-image"
    log "drawing the rig preview"
    facecast rig-preview --avatar out/avatars/demo --out out/rig-preview.png
    log "rendering 16 poses with the neural renderer (and the teacher) on the enrolled avatar"
    facecast eval renderer --avatar out/avatars/demo --n 16 --sheet out/renderer-sheet.png
    log "done: play out/demo.mp4; open out/rig-preview.png and out/renderer-sheet.png" ;;
  test)
    log "ruff check (lint, including the asyncio rules)"
    ruff check .
    exec python -m pytest -q ;;
esac
