#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (idempotent): Python deps, Docker engine,
# the registry-free base image. Needs root for apt-get and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "setup: installing evalkit and its Python dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[dev,ray]'

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  setsid nohup dockerd >/var/log/evalkit-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start (see /var/log/evalkit-dockerd.log)" >&2; exit 1; }
fi

# No registry is reachable here: build the base images from Debian packages (kept
# between runs: debootstrap is paid once). bookworm has Python 3.11 and Node 18,
# bullseye Python 3.9 (old projects, and the Python 3.9 environment test), trixie
# Python 3.13 and Node 20 (Node projects of late 2023 on, and the workspace test).
evalkit images bootstrap
evalkit images bootstrap --python 3.9
evalkit images bootstrap --python 3.13
