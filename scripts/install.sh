#!/usr/bin/env bash
# Install what tracker needs on a fresh Debian/Ubuntu machine, idempotently:
#   scripts/install.sh sandbox   MariaDB server + tracker with the S3 sandbox (moto)
#   scripts/install.sh test      the same plus the test tools (pytest, hypothesis)
# Python packages go into ./.venv so nothing depends on what the host has.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-sandbox}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
command -v lz4 >/dev/null 2>&1 || missing+=(lz4)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The tests run a local Spark (pyspark), which needs a Java runtime (17 here).
[ "$extra" != test ] || command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package may start a system server; the sandbox runs its own.

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[${extra}]"
.venv/bin/python -c 'import tracker.dump.unescape as u; assert u.ACCELERATED, "C un-escaper was not built"'
# An editable install leaves the package uncompiled (pip compiles only what
# it copies), and with PYTHONDONTWRITEBYTECODE set every `tracker` start
# would compile ~15k lines again (~0.1 s): compile once, as a normal install does.
.venv/bin/python -m compileall -q tracker >/dev/null
echo "install: ok (.venv, extra=${extra})" >&2
