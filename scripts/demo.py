"""The main job end to end on a local sandbox; run by ``scripts/demo.sh``.

Starts a MariaDB master with two GTID replicas and a local S3 API (moto
server, its own process), loads a small shop database on the master, runs
the nightly job ``tracker run`` on both replicas at once (they share the
tables through claims on the master) and on the master (where it does
nothing), then ``tracker verify``, and prints what landed.  Then stage 2:
``tracker convert`` turns the datasets into Parquet registered in an
Iceberg catalog (a sqlite file), and the demo queries them with DuckDB and
reads the Iceberg table through pyiceberg.  Everything is
stopped and removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import MotoServer, start_replica_set  # noqa: E402

log = logging.getLogger("demo")
BUCKET = "tracker-demo"
DATE = "2026-01-01"

SAMPLE = [
    "CREATE DATABASE shop",
    "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100) NULL,"
    " avatar BLOB, created DATETIME(6))",
    "INSERT INTO shop.customers VALUES (1, 'Ada', 'ada@example.com', x'89504e470d0a1a0a00005c', '2025-12-31 09:00:00.123456'),"
    " (2, 'Grace\tHopper', NULL, NULL, '2025-12-31 10:30:00'), (3, 'Zoë 😀', 'NULL', x'00', '2025-12-31 23:59:59.999999')",
    "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer INT, total DECIMAL(10,2), weight FLOAT,"
    " flags BIT(8), status ENUM('new','paid','shipped'), note TEXT)",
    "INSERT INTO shop.orders SELECT seq, 1 + seq % 3, seq * 1.25, seq / 7, seq % 256,"
    " ELT(1 + seq % 3, 'new', 'paid', 'shipped'), CONCAT('line one\\nline two \\\\ ', seq, REPEAT(' padding', 25))"
    " FROM shop.seq_1_to_20000",
    "ANALYZE TABLE shop.orders",  # fresh size estimate: ~5 MB, split into key ranges by chunk_mb: 1
    "CREATE TABLE shop.events (id INT, day DATE, payload JSON, PRIMARY KEY (id, day))"
    " PARTITION BY RANGE COLUMNS (day) (PARTITION p2025 VALUES LESS THAN ('2026-01-01'), PARTITION pmax VALUES LESS THAN (MAXVALUE))",
    "INSERT INTO shop.events SELECT seq, '2025-12-30' + INTERVAL (seq % 5) DAY, JSON_OBJECT('n', seq) FROM shop.seq_1_to_5000",
]


def load_sample(master) -> None:
    conn = master.connect()
    try:
        with conn.cursor() as cur:
            for statement in SAMPLE:
                cur.execute(statement)
    finally:
        conn.close()


def write_config(root: Path, replica, moto: MotoServer) -> Path:
    path = root / f"tracker-{replica.name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "namespace": "demo",
                "mysql": {"host": "127.0.0.1", "port": replica.port, "user": "tracker", "password": "tracker-secret-pw"},
                "outfile_dir": str(replica.outfile_dir),
                "destination": f"s3://{BUCKET}/snapshots",
                "s3": {"endpoint_url": moto.endpoint_url},
                "workers": 2,
                "chunk_mb": 1,  # tiny, so the sample's largest table shows key-range units
                "tables": {"include": [r"shop\..*"]},
                "skip_file": str(root / "skip"),
                "kill_skip_file": str(root / "no_kill"),
                "run_lock_dir": str(root),
                "warehouse": {
                    "location": f"file://{root / 'warehouse'}",
                    "catalog": {"type": "sql", "uri": f"sqlite:///{root / 'catalog.db'}", "warehouse": f"file://{root / 'warehouse'}"},
                },
            }
        )
    )
    return path


def tracker(config: Path, moto: MotoServer, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "tracker", "--config", str(config), *args]
    print("$ tracker " + " ".join(args), flush=True)
    return subprocess.run(argv, env=moto.subprocess_env(), capture_output=True, text=True)


def manifests(s3) -> list[dict]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if o["Key"].endswith("manifest.json")]
    return [json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]


def show(config: Path, moto: MotoServer) -> None:
    s3 = moto.client()
    print(f"\nObjects in s3://{BUCKET}/ :")
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        print(f"  {item['Size']:>9}  {item['Key']}")
    key = f"snapshots/demo/shop/orders/dt={DATE}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    sources = sorted({u["source"] for m in manifests(s3) for u in m["units"]})
    print(f"\nunits were dumped by: {', '.join(sources)}")
    print(f"\nmanifest of shop.orders: rows={manifest['rows']} units={len(manifest['units'])}"
          f" compression={manifest['compression']} bytes={manifest['bytes']} raw_bytes={manifest['raw_bytes']}")
    for column in manifest["columns"]:
        print(f"  {column['name']:<10} {column['type']:<28} {column['encoding']}")
    for unit in manifest["units"]:
        where = unit.get("range", {}).get("where", "whole table")
        print(f"  part-{unit['index']:05d}  rows={unit['rows']:<6} from {unit['source']:<22} where {where}")
    part = f"s3://{BUCKET}/snapshots/demo/shop/customers/dt={DATE}/part-00000.tsv.lz4"
    result = tracker(config, moto, "cat", "--format", "jsonl", part)
    print(result.stdout, end="")


def stage_two(config: Path, moto: MotoServer, root: Path) -> int:
    """Convert what was dumped, then read it as a data engineer would."""
    result = tracker(config, moto, "convert", "--date", DATE)
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    import duckdb  # the [warehouse] side of the sandbox; imported only here
    from pyiceberg.catalog import load_catalog

    files = root / "warehouse" / "demo" / "shop"
    query = (
        "SELECT o.status, count(*) AS orders, sum(o.total) AS total, any_value(c.name) AS a_customer"
        f" FROM read_parquet('{files}/orders/*/*.parquet', hive_partitioning = true) o"
        f" JOIN read_parquet('{files}/customers/*/*.parquet', hive_partitioning = true) c ON c.id = o.customer"
        f" WHERE o.dt = DATE '{DATE}' GROUP BY ALL ORDER BY 1"
    )
    print(f"\n$ duckdb: {query}")
    print(duckdb.sql(query))
    catalog = load_catalog("tracker", type="sql", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
    table = catalog.load_table(("demo", "shop", "customers"))
    print(f"$ pyiceberg: catalog.load_table(('demo', 'shop', 'customers')).scan().to_arrow()")
    print(f"  partition spec: {table.spec()}  snapshots: {len(table.snapshots())}")
    for row in table.scan().to_arrow().to_pylist():
        print(f"  {row}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running and its files in place")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s")
    root = Path(tempfile.mkdtemp(prefix="trk-demo-", dir="/tmp"))
    servers = moto = None
    try:
        log.info("starting MariaDB master + replica and a local S3 in %s", root)
        servers = start_replica_set(root / "db", replicas=2)
        moto = MotoServer(basedir=root)
        moto.start()
        moto.create_bucket(BUCKET)
        load_sample(servers.master)
        servers.sync()
        configs = [write_config(root, server, moto) for server in servers.instances]
        print(f"$ tracker run --date {DATE}   # on the master and both replicas at once")
        argv = lambda c: [sys.executable, "-m", "tracker", "-q", "--config", str(c), "run", "--date", DATE]
        runs = [subprocess.Popen(argv(c), env=moto.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
        for server, proc in zip(servers.instances, runs):
            out, err = proc.communicate(timeout=300)
            print(f"  {server.name}: exit {proc.returncode}: {out.strip()}")
            if proc.returncode != 0:
                print(err, file=sys.stderr)
                return proc.returncode
        config = configs[1]
        result = tracker(config, moto, "verify", "--date", DATE)
        print(result.stdout, end="")
        show(config, moto)
        status = stage_two(config, moto, root)
        if status != 0:
            return status
        if args.keep:
            print(f"\nsandbox kept under {root}: configs tracker-*.yaml; S3 {moto.endpoint_url}")
        return 0
    finally:
        if not args.keep:
            if moto is not None:
                moto.stop()
            if servers is not None:
                servers.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
