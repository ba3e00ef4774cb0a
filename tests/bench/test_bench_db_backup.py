"""Benchmark (``make bench``): the nightly database backup against plain ``mariadb-dump | zstd -3``.

On a generated platform database of at least 500 MB, in one run:

- full backup (per-table parts, local copy, manifest and sha256 included) vs
  ``mariadb-dump --single-transaction | zstd -3 > file``: goal ratio <= 1.10;
- incremental backup after about 1% of the rows changed vs the full backup: goal ratio <= 0.10;
- peak memory of the backup task: goal < 200 MB whatever the database size.

Each side runs twice and the faster run counts. Numbers are printed; only correctness is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import sample_data
from conftest import BENCH_LOG_ROWS

from aiplatform_ops.backup.mysql_target import client_argv, defaults_file

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 2

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from aiplatform_ops.backup.database import DatabaseBackupSettings, take_database_backup
from aiplatform_ops.backup.mysql_target import MySQLTarget
host, port, user, database, store_dir = sys.argv[2:7]
password = sys.stdin.read()
from aiplatform_ops.storage.local import LocalStore
store = LocalStore(Path(store_dir))
started = time.perf_counter()
manifest = take_database_backup(MySQLTarget(host, int(port), user, password), store, DatabaseBackupSettings((database,)))
print(json.dumps({"type": manifest.type, "size": manifest.size, "raw": manifest.details.get("raw_bytes"),
                  "seconds": time.perf_counter() - started,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def our_backup(target, database: str, store_dir: Path) -> dict:
    """One backup in a fresh process, so its peak memory is its own."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "plugins"), target.host, str(target.port), target.user, database,
         str(store_dir)],
        input=target.password, capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline(target, database: str, out: Path) -> float:
    """``mariadb-dump --single-transaction | zstd -3 > file`` with the same credentials handling."""
    with defaults_file(target) as cnf:
        dump = client_argv("mariadb-dump", cnf, "--single-transaction", "--databases", database)
        started = time.perf_counter()
        with open(out, "wb") as sink:
            producer = subprocess.Popen(dump, stdout=subprocess.PIPE)
            compressor = subprocess.Popen(["zstd", "-3", "-q", "-c"], stdin=producer.stdout, stdout=sink)
            producer.stdout.close()
            assert compressor.wait() == 0 and producer.wait() == 0
        return time.perf_counter() - started


def test_bench_database_backup(big_platform_db, tmp_path):
    target, database = big_platform_db
    base_times, full_runs = [], []
    for round_ in range(ROUNDS):
        subprocess.run(["sync"], check=True)
        base_times.append(baseline(target, database, tmp_path / f"baseline-{round_}.sql.zst"))
        subprocess.run(["sync"], check=True)
        full_runs.append(our_backup(target, database, tmp_path / f"store-{round_}"))
        assert full_runs[-1]["type"] == "full"
    raw = full_runs[0]["raw"]
    best_base, best_full = min(base_times), min(r["seconds"] for r in full_runs)

    sample_data.change_rows(target, database, 0.01, tag="bench")
    subprocess.run(["sync"], check=True)
    incremental = our_backup(target, database, tmp_path / f"store-{ROUNDS - 1}")
    assert incremental["type"] == "incremental"

    baseline_size = (tmp_path / "baseline-0.sql.zst").stat().st_size
    print(
        f"\n[bench db backup] dump: {raw / 2**20:.0f} MB raw"
        f"\n  mariadb-dump | zstd -3 : {best_base:6.2f} s  {baseline_size / 2**20:7.1f} MB"
        f"\n  full backup            : {best_full:6.2f} s  {full_runs[0]['size'] / 2**20:7.1f} MB"
        f"  ratio {best_full / best_base:.2f} (goal <= 1.10)"
        f"\n  incremental (1% rows)  : {incremental['seconds']:6.2f} s  {incremental['size'] / 2**20:7.1f} MB"
        f"  ratio to full {incremental['seconds'] / best_full:.3f} (goal <= 0.10)"
        f"\n  peak memory (backup process): full {max(r['max_rss_mb'] for r in full_runs):.0f} MB,"
        f" incremental {incremental['max_rss_mb']:.0f} MB (goal < 200 MB)"
    )
    assert raw >= 500 * 1024 * 1024 or BENCH_LOG_ROWS < 2_700_000, f"the database dumps to only {raw / 2**20:.0f} MB"
