#!/usr/bin/env bash
# Installs what countstream needs on a fresh Debian-like machine, and nothing twice:
# system packages (when a command is missing), then the virtualenv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pg_lsclusters >/dev/null || need+=(postgresql postgresql-contrib)
command -v redis-server  >/dev/null || need+=(redis-server)
command -v java          >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn           >/dev/null || need+=(maven)
command -v chromium      >/dev/null || need+=(chromium)
command -v chromedriver  >/dev/null || need+=(chromium-driver)
command -v wrk           >/dev/null || need+=(wrk)  # the HTTP load generator of make bench
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if ((${#need[@]})); then
  echo "[bootstrap] installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "[bootstrap] creating the virtualenv in .venv"
  python3 -m venv .venv
fi
if [[ ! -f .venv/.installed || pyproject.toml -nt .venv/.installed ]]; then
  echo "[bootstrap] installing countstream and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi
