#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k roundtrip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec .venv/bin/python -m pytest -q "$@"
