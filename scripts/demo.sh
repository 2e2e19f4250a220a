#!/usr/bin/env bash
# The main job end to end on a fresh machine: install what is missing, start
# a local MariaDB master + replica and a local S3, run tracker, show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh sandbox
exec .venv/bin/python scripts/demo.py "$@"
