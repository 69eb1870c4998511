#!/usr/bin/env bash
# The GPU check (tools/gpu_check.py): every chapter in the gpu profile against the local copies of the hubs, plus
# the MFU benchmark; writes gpu_check.json (wall time and peak memory per chapter). Run it on a machine with a GPU:
#   tools/gpu_check.sh [--only 01 03] [--out gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
make venv >/dev/null
exec .venv/bin/python tools/gpu_check.py "$@"
