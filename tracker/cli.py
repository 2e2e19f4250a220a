"""Command line: parse, load config, call the library, map errors to statuses.

Exit statuses (a contract): 0 ok, 1 work failed, 2 usage or config error,
3 refused by a safety check.  No SQL and no boto3 here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

import click

from tracker import config as config_mod
from tracker.dump.dumper import Dumper, TableOutcome
from tracker.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TrackerError, UsageError
from tracker.names import parse_table_name
from tracker.replicaset.kill import kill as kill_dumps
from tracker.store.reader import cat as cat_object
from tracker.dump.runner import Runner
from tracker.dump.verify import claims_listing
from tracker.dump.verify import verify as run_verify

log = logging.getLogger("tracker")


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like KeyboardInterrupt so every upload aborts."""


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    raise Terminated()


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # botocore's own INFO/DEBUG lines are noise to a DBA unless asked for.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"tracker: error: {message}", err=True)
    sys.exit(status)


def _guarded(action: Callable[[], int]) -> NoReturn:
    """Run a command body; every failure becomes one line and a status."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        status = action()
    except TrackerError as exc:
        _fail(str(exc), exc.exit_status)
    except (KeyboardInterrupt, Terminated):
        _fail("interrupted; nothing unfinished was committed", EXIT_FAILED)
    sys.exit(status)


def parse_date(value: str | None, today: dt.date) -> dt.date:
    """``--date``: default yesterday (UTC); today or later is refused."""
    if value is None:
        return today - dt.timedelta(days=1)
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date {value!r} is not a date in YYYY-MM-DD form") from None
    if date >= today:
        raise UsageError(f"--date {value}: only days before today (UTC, {today}) can be dumped")
    return date


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file [default: $TRACKER_CONFIG or /etc/tracker/config.yaml].")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for more).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="tracker")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Copy MySQL/MariaDB tables from a replica to object storage.

    Exit status: 0 ok, 1 some work failed, 2 usage or config error,
    3 refused by a safety check.
    """
    _setup_logging(verbose, quiet)
    ctx.obj = config_mod.resolve_path(config_path, os.environ)


def _load_config(ctx: click.Context) -> config_mod.Config:
    return config_mod.load(ctx.obj)


@cli.command()
@click.argument("tables", nargs=-1, required=True, metavar="DB.TABLE...")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.option("--force", is_flag=True, help="Replace a dataset that is already complete.")
@click.option("--allow-master", is_flag=True, help="Dump even when the local server is not a replica.")
@click.pass_context
def dump(ctx: click.Context, tables: tuple[str, ...], date_text: str | None, force: bool, allow_master: bool) -> None:
    """Dump one or a few tables now (manual backfill).

    Each table lands as a complete dataset under
    NAMESPACE/DB/TABLE/dt=DATE/ with _SUCCESS written last.  A complete
    dataset is left alone unless --force.  Name tables as DB.TABLE; quote a
    part containing dots with backticks: `my.db`.events.  Refused (status 3)
    on a server that is not a replica unless --allow-master.  All tables of
    one dump come from one consistent snapshot.  A table larger than
    chunk_mb is split into key ranges, dumped `workers` at a time; on a
    terminal a progress bar shows units, bytes and rate.

    \b
    Examples:
      tracker dump shop.orders
      tracker dump shop.orders shop.customers --date 2026-11-20 --force
    """

    def body() -> int:
        names = [parse_table_name(t) for t in tables]
        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        outcomes = Dumper(config, threading.Event()).dump(names, date, force=force, allow_master=allow_master)
        return _report(outcomes)

    _guarded(body)


def _report(outcomes: list[TableOutcome]) -> int:
    for outcome in outcomes:
        line = f"{outcome.status} {outcome.db}.{outcome.table}"
        if outcome.status == "done":
            line += f" rows={outcome.rows} units={len(outcome.units)}"
        if outcome.error:
            line += f": {outcome.error}"
        click.echo(line)
    return EXIT_FAILED if any(o.status == "failed" for o in outcomes) else EXIT_OK


@cli.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.option("--workers", type=click.IntRange(1, 64), help="Units dumped at once [default: workers from the config].")
@click.option("--dry-run", is_flag=True, help="Print the units that would be dumped; dump nothing.")
@click.pass_context
def run(ctx: click.Context, date_text: str | None, workers: int | None, dry_run: bool) -> None:
    """The nightly job: dump this replica's share of every table.

    Does nothing (status 0) when the skip file exists, when another run for
    this server is running, or when the local server is not a replica.  On a
    replica it waits until the master's events up to the day after DATE,
    00:00 UTC, are applied (status 3 after replication.wait_seconds), takes
    one consistent snapshot, and dumps the units no other replica holds or
    finished, claiming each on the master; a table's units (partitions, key
    ranges of tables above chunk_mb) are planned once per replica set, on
    the master.  It pauses while the replica lags past
    replication.max_lag_seconds and keeps to max_mb_per_second.  Status 1
    if any unit failed.

    \b
    Examples (cron, every replica and master of a set):
      15 0 * * *  tracker run
      tracker run --date 2026-11-20 --dry-run
    """

    def body() -> int:
        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        report = Runner(config, threading.Event()).run(date, workers=workers, dry_run=dry_run)
        for label in report.planned:
            click.echo(f"would dump {label}")
        click.echo(report.note)
        for line in report.failed:
            click.echo(f"failed {line}")
        return report.status

    _guarded(body)


@cli.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.pass_context
def verify(ctx: click.Context, date_text: str | None) -> None:
    """Check that every table of the local server landed complete.

    Compares the local server's tables (after tables.include/exclude) with
    the datasets that have _SUCCESS in the destination; prints each missing
    or incomplete one; status 1 when any is.  Build alerts on it.

    \b
    Examples:
      tracker verify
      tracker verify --date 2026-11-20 || page-the-dba
    """

    def body() -> int:
        date = parse_date(date_text, _utc_today())
        checked, gaps = run_verify(_load_config(ctx), date)
        for gap in gaps:
            click.echo(f"{gap.state} {gap.db}.{gap.table} dt={date}")
        click.echo(f"{checked - len(gaps)} of {checked} tables complete for {date}")
        return EXIT_FAILED if gaps else EXIT_OK

    _guarded(body)


@cli.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.pass_context
def locks(ctx: click.Context, date_text: str | None) -> None:
    """Show the claims on the master for a date: tables being planned, active leases, done units.

    \b
    Examples:
      tracker locks
      tracker locks --date 2026-11-20
    """

    def body() -> int:
        date = parse_date(date_text, _utc_today())
        rows = claims_listing(_load_config(ctx), date)
        click.echo("STATE   UNIT                                     HOST:PORT (PID)               SINCE                       EXPIRES/DONE")
        for db, tbl, unit, units, state, host, port, pid, since, expires, done_at, expired in rows:
            if state == "planning":  # a host is choosing the table's units
                name, owner, since = f"{db}.{tbl} (its units)", host, ""
            else:
                name, owner = f"{db}.{tbl}/part-{unit:05d} of {units}", f"{host}:{port} ({pid})"
            until = done_at if state == "done" else f"{expires}{' EXPIRED' if expired else ''}"
            click.echo(f"{state:<7} {name:<40} {owner:<29} {since!s:<27} {until}")
        return EXIT_OK

    _guarded(body)


@cli.command(name="kill")
@click.option("--force", is_flag=True, help="Kill every tracker dump on this server, replica or not.")
@click.pass_context
def kill_command(ctx: click.Context, force: bool) -> None:
    """Stop dumps after a failover; clean up orphans.  For cron, every minute.

    When the local server is no longer a replica (promoted, replication
    reset, or read_only off), or with --force, kills every tracker dump query
    on it and sends SIGTERM to every local tracker run/dump using this
    config.  On a healthy replica it kills only orphaned dump queries, whose
    tracker process is gone.  Never drops or changes a MySQL user.  The
    kill_skip_file disables it.  Status 0 unless it could not do its job.

    \b
    Examples:
      * * * * *  tracker kill
      tracker kill --force
    """

    def body() -> int:
        config = _load_config(ctx)
        if config.kill_skip_file.exists():
            click.echo(f"disabled by {config.kill_skip_file}; nothing killed")
            return EXIT_OK
        report = kill_dumps(config, force=force)
        for query in report.queries:
            click.echo(f"killed query {query.connection_id} of tracker pid {query.pid}")
        for pid in report.processes:
            click.echo(f"sent SIGTERM to tracker pid {pid}")
        click.echo(f"{report.reason or 'healthy replica'}: {len(report.queries)} queries killed, {len(report.processes)} processes stopped")
        return EXIT_OK

    _guarded(body)


@cli.command(name="cat")
@click.argument("url")
@click.option("--format", "fmt", type=click.Choice(["raw", "jsonl"]), default="raw", show_default=True, help="raw: the stored text format; jsonl: one JSON object per row.")
@click.pass_context
def cat_command(ctx: click.Context, url: str, fmt: str) -> None:
    """Decode one data object to stdout.

    URL is s3://BUCKET/KEY or file:///PATH.  The S3 endpoint comes from the
    config file when there is one.

    \b
    Examples:
      tracker cat s3://dumps/main/shop/orders/dt=2026-11-22/part-00000.tsv.lz4 | head
      tracker cat --format jsonl file:///data/main/shop/orders/dt=2026-11-22/part-00000.tsv.lz4
    """

    def body() -> int:
        s3 = config_mod.S3Config()
        if ctx.obj != config_mod.DEFAULT_PATH or os.path.exists(ctx.obj):
            s3 = _load_config(ctx).s3
        cat_object(url, fmt, s3, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK

    _guarded(body)


def main() -> None:
    """Console entry point; click's own usage errors exit with status 2."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        raise SystemExit(EXIT_USAGE if code not in (0, 1, 2, 3, None) else code) from None
