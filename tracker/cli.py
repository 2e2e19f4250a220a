"""Command line: parse, load config, call the library, map errors to statuses.

Exit statuses (a contract): 0 ok, 1 work failed, 2 usage or config error,
3 refused by a safety check.  No SQL and no boto3 here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

import click

from tracker.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, TrackerError, UsageError
from tracker.names import parse_table_name

# Commands import the library code they call in their bodies: cron starts
# `tracker run` on every replica, and with many small tables its start-up
# counts against the per-table budget (issue 11).  So `run` loads neither the
# text decoder and its charset tables nor the warehouse, and `--help` none of
# the library (tests/unit/test_startup.py guards both).
if TYPE_CHECKING:
    from tracker import metrics
    from tracker.config import Config
    from tracker.dump.dumper import TableOutcome

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
    # The format names no process: a record need not look it up (a system call each).
    logging.logProcesses = logging.logMultiprocessing = False
    # botocore's own INFO/DEBUG lines are noise to a DBA unless asked for.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(str(text).split())


def _fail(message: str, status: int) -> NoReturn:
    """The last line on stderr of every failed command, and its status."""
    sys.stdout.flush()  # stdout's lines come first when both go to one file
    click.echo(f"tracker: error: {one_line(message)}", err=True)
    sys.exit(status)


def failures(what: str, total: int, failed: Sequence[str]) -> TrackerError:
    """Per-table (or per-unit) failures as one error: ``2 of 3 tables failed: a.b: ...; c.d: ...``."""
    return TrackerError(f"{len(failed)} of {total} {what} failed: " + "; ".join(one_line(f) for f in failed))


def _guarded(action: Callable[[], int]) -> NoReturn:
    """Run a command body; every failure becomes one line and a status, and the metrics file says so."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    meter = _start_meter()
    try:
        status = action()
    except TrackerError as exc:
        meter.finish(exc.exit_status)
        _fail(str(exc), exc.exit_status)
    except (KeyboardInterrupt, Terminated):
        meter.finish(EXIT_FAILED)
        _fail("interrupted; nothing unfinished was committed", EXIT_FAILED)
    meter.finish(status)
    sys.exit(status)


_METER = "tracker.metrics"


def _start_meter() -> metrics.CommandMeter:
    """This command's metrics (``metrics_file``), kept in click's context for the body and ``_load_config``."""
    from tracker.metrics import CommandMeter

    ctx = click.get_current_context()
    meter = CommandMeter(ctx.info_name or "")
    ctx.meta[_METER] = meter
    return meter


def _meter(ctx: click.Context) -> metrics.CommandMeter:
    from tracker.metrics import CommandMeter

    return ctx.meta.get(_METER) or CommandMeter("")


# Only the documented form: fromisoformat alone also takes 20261130 and 2026-W48-1.
_DATE_FORM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(value: str | None, today: dt.date) -> dt.date:
    """``--date``: YYYY-MM-DD, default yesterday (UTC); today or later is refused."""
    if value is None:
        return today - dt.timedelta(days=1)
    try:
        if not _DATE_FORM.fullmatch(value):
            raise ValueError(value)
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
    from tracker.config import resolve_path

    _setup_logging(verbose, quiet)
    ctx.obj = resolve_path(config_path, os.environ)


def _load_config(ctx: click.Context) -> Config:
    from tracker.config import load

    config = load(ctx.obj)
    _meter(ctx).bind(config.metrics_file, config.namespace)
    return config


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
        from tracker.dump.dumper import Dumper

        names = [parse_table_name(t) for t in tables]
        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        outcomes = Dumper(config, threading.Event()).dump(names, date, force=force, allow_master=allow_master)
        _meter(ctx).count(
            done=sum(o.status == "done" for o in outcomes),
            failed=sum(o.status == "failed" for o in outcomes),
            skipped=sum(o.status == "skipped" for o in outcomes),
            rows=sum(o.rows for o in outcomes if o.status == "done"),
            nbytes=sum(int(u.get("bytes", 0)) for o in outcomes if o.status == "done" for u in o.units),
        )
        return _report(outcomes)

    _guarded(body)


def _report(outcomes: list[TableOutcome]) -> int:
    """One stdout line per table done or skipped; the failed ones in one error."""
    failed: list[str] = []
    for outcome in outcomes:
        name = f"{outcome.db}.{outcome.table}"
        if outcome.status == "failed":
            failed.append(f"{name}: {outcome.error or 'failed'}")
            continue
        line = f"{outcome.status} {name}"
        if outcome.status == "done":
            line += f" rows={outcome.rows} units={len(outcome.units)}"
        if outcome.error:
            line += f": {outcome.error}"
        click.echo(line)
    if failed:
        raise failures("tables", len(outcomes), failed)
    return EXIT_OK


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
        from tracker.dump.runner import Runner

        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        report = Runner(config, threading.Event()).run(date, workers=workers, dry_run=dry_run)
        meter = _meter(ctx)
        if dry_run or report.already_running:
            meter.disable()  # it did nothing (the running one records its own outcome): not a run to alert on
        meter.count(done=len(report.done), failed=len(report.failed), skipped=len(report.skipped), rows=report.rows, nbytes=report.bytes)
        meter.observed.replica_lag_seconds = report.replica_lag_seconds
        for label in report.planned:
            click.echo(f"would dump {label}")
        click.echo(report.note)
        if report.failed:
            total = len(report.done) + len(report.skipped) + len(report.failed)
            raise failures("units", total, report.failed)
        if report.status != EXIT_OK:
            raise TrackerError(report.note)
        return report.status

    _guarded(body)


@cli.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.option("--deep", is_flag=True, help="Also read back every object of the complete datasets (and their Parquet files).")
@click.pass_context
def verify(ctx: click.Context, date_text: str | None, deep: bool) -> None:
    """Check that every table of the local server landed complete.

    Compares the local server's tables (after tables.include/exclude) with
    the datasets that have _SUCCESS in the destination; prints each missing
    or incomplete one; status 1 when any is.  Build alerts on it.

    With --deep, every object of the complete datasets is read back: each
    part's size and CRC-32C against the manifest, decoded and its rows
    counted; schema.sql and the manifest present.  With a warehouse
    section (and pyarrow installed), each Parquet file's row count is
    checked against the source manifest too.  One line per bad object
    (missing URL, corrupt URL: why, rows URL: manifest N, part M).

    \b
    Examples:
      tracker verify
      tracker verify --date 2026-11-20 || page-the-dba
      tracker verify --deep --date 2026-11-20
    """

    def body() -> int:
        from tracker.dump.verify import verify as run_verify
        from tracker.dump.verify import verify_deep

        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        problems: list = []
        if deep:
            checked, gaps, problems = verify_deep(config, date)
            _meter(ctx).observed.objects_bad = len(problems)
        else:
            checked, gaps = run_verify(config, date)
        _meter(ctx).observed.tables_incomplete = len(gaps)
        for gap in gaps:
            click.echo(f"{gap.state} {gap.db}.{gap.table} dt={date}")
        for problem in problems:
            click.echo(problem.line)
        click.echo(f"{checked - len(gaps)} of {checked} tables complete for {date}")
        if deep:
            click.echo(f"{len(problems)} bad objects")
        return EXIT_FAILED if gaps or problems else EXIT_OK

    _guarded(body)


@cli.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.pass_context
def locks(ctx: click.Context, date_text: str | None) -> None:
    """Show the claims on the master for a date: dataset leases, tables being planned, unit leases, done units.

    A dataset lease (state dump or run) shows who writes a table's dataset:
    one dump, or the run hosts of the replica set (the one that started).

    \b
    Examples:
      tracker locks
      tracker locks --date 2026-11-20
    """

    def body() -> int:
        from tracker.dump.verify import claims_listing

        date = parse_date(date_text, _utc_today())
        rows = claims_listing(_load_config(ctx), date)
        click.echo("STATE   UNIT                                     HOST:PORT (PID)               SINCE                       EXPIRES/DONE")
        for db, tbl, unit, units, state, host, port, pid, since, expires, done_at, expired in rows:
            if state == "planning":  # a host is choosing the table's units
                name, owner, since = f"{db}.{tbl} (its units)", host, ""
            elif unit is None:  # a dataset lease: one dump, or the run hosts (owner: who started it)
                name, owner = f"{db}.{tbl} (dataset)", f"{host}:{port} ({pid})"
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
        from tracker.replicaset.kill import kill as kill_dumps

        config = _load_config(ctx)
        if config.kill_skip_file.exists():
            click.echo(f"disabled by {config.kill_skip_file}; nothing killed")
            return EXIT_OK
        report = kill_dumps(config, force=force)
        for query in report.queries:
            click.echo(f"killed query {query.connection_id} of tracker pid {query.pid}")
        for pid in report.processes:
            click.echo(f"sent SIGTERM to tracker pid {pid}")
        for path in report.files:
            click.echo(f"removed stale OUTFILE {path}")
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
        from tracker.config import DEFAULT_PATH, S3Config
        from tracker.store.reader import cat as cat_object

        s3 = S3Config()
        if ctx.obj != DEFAULT_PATH or os.path.exists(ctx.obj):
            s3 = _load_config(ctx).s3
        cat_object(url, fmt, s3, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK

    _guarded(body)


@cli.command(name="convert")
@click.argument("tables", nargs=-1, metavar="[DB.TABLE...]")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Dataset date [default: yesterday, UTC].")
@click.option("--force", is_flag=True, help="Convert again even when the date is already converted.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Units converted at once (local engine).")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True, help="Run the units here or as a Spark job.")
@click.option("--spark-master", metavar="URL", help="Spark master for --engine spark, e.g. local[2] or spark://host:7077.")
@click.option("--print-ddl", is_flag=True, help="Print Hive/Trino DDL for each converted table.")
@click.pass_context
def convert_command(
    ctx: click.Context,
    tables: tuple[str, ...],
    date_text: str | None,
    force: bool,
    workers: int,
    engine: str,
    spark_master: str | None,
    print_ddl: bool,
) -> None:
    """Convert complete datasets of a date to Parquet (and Iceberg).

    Every dataset with _SUCCESS under the destination, of this namespace and
    of the namespaces warehouse.logical_tables names (or only the tables
    named), becomes WAREHOUSE/NS/DB/TABLE/dt=DATE/part-NNNNN.parquet, one
    file per unit, then _manifest.json and _SUCCESS.  A file is never
    visible half written; a re-run converts only what is missing; --force
    converts the date again.  Needs no MySQL: a converter host's config may
    omit mysql and outfile_dir.  Prints one line per table; status 1 if any
    failed.

    \b
    Examples (cron, after tracker verify):
      30 6 * * *  tracker convert
      tracker convert shop.orders --date 2026-11-20 --force --print-ddl
    """

    def body() -> int:
        names = [parse_table_name(t) for t in tables] or None
        date = parse_date(date_text, _utc_today())
        config = _load_config(ctx)
        config.require_warehouse()
        try:  # pyarrow is the [warehouse] extra: imported only by this command
            from tracker.warehouse.engine import convert as run_convert
        except ImportError as exc:
            raise UsageError(f"tracker convert needs the [warehouse] extra (pip install 'tracker[warehouse]'): {exc}") from None
        outcomes = run_convert(config, names, date, force=force, workers=workers, engine=engine, spark_master=spark_master)
        _meter(ctx).count(
            done=sum(o.status == "done" for o in outcomes),
            failed=sum(o.status == "failed" for o in outcomes),
            skipped=sum(o.status in ("up-to-date", "busy") for o in outcomes),
            rows=sum(o.rows for o in outcomes if o.status == "done"),
        )
        for outcome in outcomes:
            line = f"{outcome.status} {outcome.name} dt={date}"
            if outcome.status in ("done", "up-to-date"):
                line += f" rows={outcome.rows} files={outcome.files}"
                if outcome.zero_dates:
                    line += f" zero_dates={sum(outcome.zero_dates.values())}"
            if outcome.status == "busy":
                line += f": {outcome.error}"
            click.echo(line)
        if print_ddl:
            _print_ddl(outcomes, date)
        failed = [o for o in outcomes if o.status == "failed"]
        for outcome in failed:
            click.echo(f"tracker: error: convert {outcome.name} dt={date}: {outcome.error}", err=True)
        return EXIT_FAILED if failed else EXIT_OK

    _guarded(body)


def _print_ddl(outcomes: list, date: dt.date) -> None:
    from tracker.warehouse.ddl import hive_ddl

    for outcome in outcomes:
        if outcome.schema is not None and outcome.files:
            click.echo(hive_ddl(outcome.name, outcome.schema, outcome.location_url, date))


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: click's own usage errors become one line, status 2.

    click in standalone mode prints Usage/Try/blank/Error for a usage error;
    run non-standalone, its exceptions reach us and end in the same single
    ``tracker: error:`` line as every other failure.  ``--help`` and
    ``--version`` still print and exit 0.
    """
    try:
        status = cli.main(args=args, prog_name="tracker", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)  # bare `tracker`: the help, then the line
        _fail("no command given", EXIT_USAGE)
    except click.UsageError as exc:  # unknown option or command, missing argument, bad value
        _fail(_usage_message(exc), EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), EXIT_USAGE)
    except click.Abort:  # Ctrl-C outside a command body
        _fail("interrupted", EXIT_FAILED)
    except SystemExit as exc:  # a command's own status (see _guarded)
        code = exc.code
        raise SystemExit(EXIT_USAGE if code not in (0, 1, 2, 3, None) else code) from None
    sys.exit(status if status in (0, 1, 2, 3) else EXIT_OK if status is None else EXIT_USAGE)


def _usage_message(exc: click.UsageError) -> str:
    """click's message, and where to read more: ``... (see 'tracker dump --help')``."""
    where = exc.ctx.command_path if exc.ctx is not None else "tracker"
    return f"{exc.format_message().rstrip('.')} (see '{where} --help')"
