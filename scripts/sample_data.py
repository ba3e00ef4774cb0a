"""The platform schema with generated sample data, for the demo, the tests and the benchmarks.

Rows are generated on the server (MariaDB's SEQUENCE engine), so a few hundred MB take seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file  # noqa: E402

SCHEMA = REPO / "include" / "sql" / "schema.sql"
TABLES = ("ai_dataset", "ai_dataset_file", "ai_training_job", "ai_training_log")


def run_sql(target: MySQLTarget, sql: str, database: str | None = None) -> str:
    """Run SQL through the ``mariadb`` client (multi-statement scripts), password in a defaults file."""
    with defaults_file(target) as cnf:
        argv = client_argv("mariadb", cnf, "--batch", "-N", *([database] if database else []))
        result = subprocess.run(argv, input=sql, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"SQL failed: {result.stderr.strip()}")
    return result.stdout


def apply_schema(target: MySQLTarget, database: str) -> None:
    run_sql(target, f"CREATE DATABASE IF NOT EXISTS `{database}` DEFAULT CHARACTER SET utf8mb4;")
    run_sql(target, SCHEMA.read_text(), database)


def populate(target: MySQLTarget, database: str, log_rows: int = 20000) -> None:
    """Datasets, files, jobs and ``log_rows`` training-log lines (about 200 bytes each when dumped)."""
    datasets = max(log_rows // 200, 10)
    files = datasets * 20
    jobs = datasets * 2
    run_sql(target, f"""
        SET SESSION sql_log_bin = 1;
        INSERT INTO ai_dataset (name, type, status, description, created_time)
          SELECT CONCAT('dataset-', seq), ELT(1 + seq % 3, 'image', 'text', 'audio'),
                 ELT(1 + seq % 4, 'active', 'active', 'archived', 'draft'),
                 CONCAT('Sample dataset ', seq, ' with ''quotes'', a newline\\n and unicode: 数据集 ', MD5(seq)),
                 '2026-01-01' + INTERVAL seq MINUTE
          FROM seq_1_to_{datasets};
        INSERT INTO ai_dataset_file (dataset_id, file_path, size_bytes, md5, created_time)
          SELECT 1 + seq % {datasets}, CONCAT('/app/aiplatform/data/datasets/', 1 + seq % {datasets}, '/part-', seq, '.parquet'),
                 seq * 4096, MD5(CONCAT('file', seq)), '2026-01-02' + INTERVAL seq SECOND
          FROM seq_1_to_{files};
        INSERT INTO ai_training_job (dataset_id, name, status, node, gpu_count, checkpoint_uri, config, created_time)
          SELECT 1 + seq % {datasets}, CONCAT('job-', seq), ELT(1 + seq % 5, 'running', 'pending', 'succeeded', 'failed', 'succeeded'),
                 CONCAT('gpu-node-', seq % 8), 1 + seq % 8, CONCAT('s3://checkpoints/job-', seq, '/step-1000'),
                 JSON_OBJECT('lr', 0.001 * (1 + seq % 10), 'batch', 32 * (1 + seq % 4)), '2026-02-01' + INTERVAL seq MINUTE
          FROM seq_1_to_{jobs};
        INSERT INTO ai_training_log (job_id, level, message, step, loss, created_time)
          SELECT 1 + seq % {jobs}, ELT(1 + seq % 10, 'INFO','INFO','INFO','INFO','INFO','INFO','INFO','INFO','WARN','ERROR'),
                 CONCAT('step ', seq, ' loss=', ROUND(1 / (1 + seq % 1000), 6), ' lr=0.001 grad_norm=', ROUND(RAND(seq), 4),
                        ' throughput=', seq % 977, ' samples/s ', SHA2(seq, 256), ' ', MD5(seq)),
                 seq, 1 / (1 + seq % 1000), '2026-01-01' + INTERVAL (seq * 7) SECOND
          FROM seq_1_to_{log_rows};
    """, database)


def change_rows(target: MySQLTarget, database: str, fraction: float = 0.01, tag: str = "change") -> None:
    """Insert, update and delete about ``fraction`` of the rows (a third each), plus a few other edits."""
    every = max(3, round(3 / fraction))
    run_sql(target, f"""
        SELECT COUNT(*), MAX(id) INTO @logs, @last FROM ai_training_log;
        SET @n = GREATEST(1, FLOOR(@logs / {every}));
        SET @jobs = (SELECT MAX(id) FROM ai_training_job);
        INSERT INTO ai_training_log (job_id, level, message, step, loss, created_time)
          SELECT 1 + seq % @jobs, 'INFO', CONCAT('{tag} ', seq, ' ', SHA2(seq, 256)), seq, 0.5, NOW(6)
          FROM seq_1_to_10000000 WHERE seq <= @n;
        UPDATE ai_training_log SET loss = loss / 2, message = CONCAT(message, ' {tag}')
          WHERE id % {every} = 1 AND id <= @last;
        DELETE FROM ai_training_log WHERE id % {every} = 2 AND id <= @last;
        UPDATE ai_training_job SET status = 'failed', node = NULL WHERE id % 7 = 0;
        INSERT INTO ai_dataset (name, type, status, description) VALUES ('{tag}-dataset', 'text', 'draft', 'added by {tag}');
        DELETE FROM ai_dataset_file WHERE id % 50 = 0;
    """, database)


def table_fingerprints(target: MySQLTarget, database: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent hash of every row of every table: equal means equal data."""
    tables = [r[0] for r in target.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' "
        "ORDER BY table_name", (database,))]
    result = {}
    for table in tables:
        columns = [r[0] for r in target.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", (database, table))]
        row = ", ".join(f"COALESCE(HEX(`{c}`), '<null>')" for c in columns)
        count, digest = target.query(
            f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(MD5(CONCAT_WS('|', {row})), 15), 16, 10) AS UNSIGNED)), 0) "
            f"FROM `{database}`.`{table}`")[0]
        result[table] = (int(count), str(digest))
    return result
