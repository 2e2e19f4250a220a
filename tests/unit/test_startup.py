"""What each command imports before it does any work.

cron starts ``tracker run`` (and ``verify``, ``kill``) on every replica; with
many small tables the start-up counts against the per-table budget (issue 11).
The text decoder's charset tables, the warehouse, pyarrow and boto3 cost tens
of milliseconds and none of these commands needs them before its first
object; ``--help`` needs none of the library.  One import at module level
would silently bring them back, so each case runs the real command in a fresh
interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the command as the console script does, stopped at the missing config
# file (status 2): what it imported is then exactly its start-up.
_PROBE = """
import json, sys
from tracker.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""

# Needed only to decode text (cat, verify --deep), by the warehouse, or by S3.
DECODER_AND_WAREHOUSE = (
    "tracker.store._charmaps",
    "tracker.store.charsets",
    "tracker.store.reader",
    "tracker.store.textformat",
    "tracker.store.audit",
    "tracker.warehouse",
    "pyarrow",
    "boto3",
    "botocore",
)
# The library behind the commands: `--help` must load none of it.
LIBRARY = ("tracker.config", "tracker.metrics", "tracker.dump", "tracker.replicaset", "tracker.store", "pymysql", "yaml", "cryptography")


def imported(args: list[str], cwd: Path) -> set[str]:
    """The modules loaded by ``tracker ARGS`` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The members of ``modules`` that are one of ``packages`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_import_cli_loads_no_library(tmp_path: Path) -> None:
    modules = imported(["--help"], tmp_path)
    assert "tracker.cli" in modules and "click" in modules  # the probe did run the CLI
    assert loaded(modules, LIBRARY + DECODER_AND_WAREHOUSE) == []


@pytest.mark.parametrize("command", ["run", "verify", "locks", "kill", "dump"])
def test_cron_commands_skip_decoder_and_warehouse(tmp_path: Path, command: str) -> None:
    args = ["--config", str(tmp_path / "missing.yaml"), command] + (["db.t"] if command == "dump" else [])
    modules = imported(args, tmp_path)
    assert "tracker.config" in modules  # the probe got as far as loading the config
    assert loaded(modules, DECODER_AND_WAREHOUSE) == []


def test_run_skips_other_commands_modules(tmp_path: Path) -> None:
    modules = imported(["--config", str(tmp_path / "missing.yaml"), "run"], tmp_path)
    assert "tracker.dump.runner" in modules
    assert loaded(modules, ("tracker.dump.dumper", "tracker.dump.verify")) == []


def test_charset_tables_load_on_first_non_unicode_charset(tmp_path: Path) -> None:
    """``cat`` of raw text and ``verify --deep`` import the reader but decode nothing."""
    probe = (
        "import sys\n"
        "from tracker.store import charsets, reader\n"
        "assert charsets.decode(b'caf\\xc3\\xa9', 'utf8mb4') == 'caf\\u00e9' and charsets.is_text('utf8mb4')\n"
        "print('tracker.store._charmaps' in sys.modules)\n"
        "assert charsets.decode(b'\\x80', 'latin1') == '\\u20ac'\n"
        "print('tracker.store._charmaps' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
