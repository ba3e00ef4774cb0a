"""System verification after a restore (manual §2.2.2), in four groups.

- ``service_status``: every service in the inventory answers its health checks.
- ``data_integrity``: row counts (and ``CHECKSUM TABLE`` values) match what the caller expects,
  e.g. from a backup manifest; no orphan rows (``ai_dataset_file.dataset_id`` without an
  ``ai_dataset``); files match their size and sha256.
- ``core_functions``: configured smoke checks, SQL that must return rows and HTTP calls that must
  answer.
- ``metrics``: MySQL connections, Redis hit rate, free disk against ``thresholds.yaml``.

Each check gives a :class:`CheckResult` instead of raising, so one broken probe never hides the
others; :mod:`aiplatform_ops.verify.report` turns the results into the report and the verdict.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aiplatform_ops.config import ConfigError, Section, load_yaml
from aiplatform_ops.services.health import HttpCheck, probe, probe_http
from aiplatform_ops.services.inventory import ServiceInventory
from aiplatform_ops.storage.manifest import sha256_file

GROUPS = ("service_status", "data_integrity", "core_functions", "metrics")
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
IDENT = r"[A-Za-z0-9_$]+"
READ_ONLY_SQL = re.compile(r"\s*(?:/\*.*?\*/\s*)*(select|with|show)\b", re.IGNORECASE | re.DOTALL)
MAX_LISTED = 10


@dataclass
class CheckResult:
    group: str
    name: str
    status: str
    detail: str = ""
    expected: Any = None
    observed: Any = None


# --- settings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrphanCheck:
    """Rows of ``child_table.child_column`` whose value has no ``parent_table.parent_column``."""

    name: str
    child_table: str
    child_column: str
    parent_table: str
    parent_column: str


@dataclass(frozen=True)
class SqlSmoke:
    name: str
    sql: str
    min_rows: int = 1


@dataclass(frozen=True)
class HttpSmoke:
    name: str
    check: HttpCheck


@dataclass(frozen=True)
class VerifySettings:
    """``verify.yaml``: where reports go and which integrity and smoke checks run."""

    file: Path
    report_dir: Path
    database: str
    orphan_checks: tuple[OrphanCheck, ...]
    sql_smoke: tuple[SqlSmoke, ...]
    http_smoke: tuple[HttpSmoke, ...]


@dataclass(frozen=True)
class MetricThresholds:
    """The parts of ``thresholds.yaml`` verification reads (other sections are for other DAGs)."""

    file: Path
    mysql_threads_connected_max: int
    redis_hit_rate_min: float
    redis_min_lookups: int
    disk_free_percent_min: float
    disk_paths: tuple[Path, ...]


def _only_keys(s: Section, allowed: set[str]) -> None:
    for key in s.data:
        if key not in allowed:
            raise s.error(str(key), f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _column(s: Section, key: str) -> tuple[str, str]:
    value = s.string(key, pattern=rf"{IDENT}\.{IDENT}")
    table, column = value.split(".")
    return table, column


def _list(s: Section, key: str) -> list[Section]:
    entries = s.raw(key, [])
    if not isinstance(entries, list):
        raise s.error(key, f"expected a list, got {entries!r}")
    return [Section(s.file, e, f"{s.key + '.' if s.key else ''}{key}[{i}]") for i, e in enumerate(entries)]


def load_verify_settings(directory: Path | None = None) -> VerifySettings:
    """Load and validate ``verify.yaml``; raises :class:`ConfigError` naming file and key."""
    path, data = load_yaml("verify.yaml", directory)
    root = Section(path, data)
    _only_keys(root, {"report_dir", "database", "orphan_checks", "smoke"})
    report_dir = root.string("report_dir")
    if not report_dir.startswith("/"):
        raise root.error("report_dir", f"{report_dir!r} is not an absolute path")
    orphans = []
    for s in _list(root, "orphan_checks"):
        _only_keys(s, {"name", "child", "parent"})
        orphans.append(OrphanCheck(s.string("name"), *_column(s, "child"), *_column(s, "parent")))
    smoke = root.section("smoke", required=False)
    _only_keys(smoke, {"sql", "http"})
    sql = []
    for s in _list(smoke, "sql"):
        _only_keys(s, {"name", "sql", "min_rows"})
        statement = s.string("sql")
        if not READ_ONLY_SQL.match(statement) or ";" in statement.strip().rstrip(";"):
            raise s.error("sql", "must be one SELECT, WITH or SHOW statement (smoke checks only read)")
        sql.append(SqlSmoke(s.string("name"), statement, s.integer("min_rows", 1, minimum=1)))
    http = []
    for s in _list(smoke, "http"):
        _only_keys(s, {"name", "url", "expect_status", "body_contains", "body_regex", "timeout_seconds"})
        http.append(HttpSmoke(s.string("name"), HttpCheck(
            url=s.string("url", pattern=r"https?://\S+"), expect_status=s.integer("expect_status", 200, minimum=100),
            body_contains=s.optional_string("body_contains"), body_regex=s.optional_string("body_regex"),
            timeout_seconds=s.number("timeout_seconds", 10.0, minimum=0.1),
        )))
    return VerifySettings(path, Path(report_dir), root.string("database", pattern=IDENT),
                          tuple(orphans), tuple(sql), tuple(http))


def load_thresholds(directory: Path | None = None) -> MetricThresholds:
    """Load the verification thresholds of ``thresholds.yaml``; errors name file and key."""
    path, data = load_yaml("thresholds.yaml", directory)
    root = Section(path, data)
    mysql, redis, disk = root.section("mysql"), root.section("redis"), root.section("disk")
    hit_rate = redis.number("hit_rate_min", minimum=0.0)
    if hit_rate > 1:
        raise redis.error("hit_rate_min", f"is a fraction between 0 and 1, got {hit_rate}")
    free = disk.number("free_percent_min", minimum=0.0)
    if free > 100:
        raise disk.error("free_percent_min", f"is a percentage, got {free}")
    paths = disk.strings("paths")
    for p in paths:
        if not p.startswith("/"):
            raise disk.error("paths", f"{p!r} is not an absolute path")
    return MetricThresholds(
        file=path,
        mysql_threads_connected_max=mysql.integer("threads_connected_max", minimum=1),
        redis_hit_rate_min=hit_rate,
        redis_min_lookups=redis.integer("min_lookups", 0, minimum=0),
        disk_free_percent_min=free,
        disk_paths=tuple(Path(p) for p in paths),
    )


@dataclass(frozen=True)
class Expectations:
    """What the restored system must hold, e.g. taken from a backup manifest.

    ``tables``: ``{"db.table": rows}`` or ``{"db.table": {"rows": n, "checksum": c}}``;
    ``files``: ``[{"path", "size", "sha256"}]``, paths relative to ``files_root`` when given.
    """

    tables: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    files_root: str | None = None

    @property
    def empty(self) -> bool:
        return not self.tables and not self.files


def _from_manifest(origin: str, manifest: Mapping[str, Any]) -> Expectations:
    """A full database backup's ``manifest.json`` lists rows per table in ``details.tables``.

    Only right for a restore of that full backup without binary log replay: after a replay the
    caller must pass the counts at the point in time instead.
    """
    tables = (manifest.get("details") or {}).get("tables")
    if manifest.get("kind") != "database" or manifest.get("type") != "full" or not isinstance(tables, dict):
        raise ConfigError(origin, "details.tables",
                          f"backup {manifest.get('backup_id')} is not a full database backup with row counts")
    return Expectations(tables=dict(tables))


def load_expectations(source: str | Path | Mapping[str, Any] | None) -> Expectations:
    """Expectations from a mapping, a JSON/YAML file or a full database backup's ``manifest.json``.

    ``None`` or ``""`` means none.
    """
    if source is None or source in ("", "None"):
        return Expectations()
    if isinstance(source, Mapping):
        data: Any = source
        origin = "expectations"
    else:
        origin = str(source)
        text = Path(source).read_text(encoding="utf-8")
        data = json.loads(text) if origin.endswith(".json") else yaml.safe_load(text)
    if isinstance(data, Mapping) and "backup_id" in data:
        return _from_manifest(origin, data)
    s = Section(Path(origin), data)
    _only_keys(s, {"tables", "files", "files_root"})
    tables = s.raw("tables", {})
    if not isinstance(tables, dict) or not all(re.fullmatch(rf"{IDENT}\.{IDENT}", str(k)) for k in tables):
        raise s.error("tables", "expected a mapping of 'database.table' to a row count or {rows, checksum}")
    files = s.raw("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) and {"path", "sha256"} <= set(f) for f in files):
        raise s.error("files", "expected a list of {path, size, sha256}")
    return Expectations(dict(tables), list(files), s.optional_string("files_root"))


# --- service status -------------------------------------------------------------------------

def check_service_status(inventory: ServiceInventory, services: Sequence[str] | None = None) -> list[CheckResult]:
    """Each health check of each service (in start order) must pass."""
    results = []
    for spec in inventory.start_order(services):
        if not spec.health:
            results.append(CheckResult("service_status", spec.name, SKIPPED, "no health checks in the inventory"))
        for check in spec.health:
            r = probe(check)
            results.append(CheckResult("service_status", f"{spec.name}: {r.check}", PASSED if r.healthy else FAILED,
                                       r.detail, observed={"seconds": r.seconds}))
    return results


# --- data integrity -------------------------------------------------------------------------

def _qualified(name: str) -> str:
    if not re.fullmatch(rf"{IDENT}\.{IDENT}", name):
        raise ValueError(f"{name!r} is not database.table")
    db, table = name.split(".")
    return f"`{db}`.`{table}`"


def _query(conn: Any, sql: str, args: tuple | None = None) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return list(cur.fetchall())
    finally:
        cur.close()


def check_row_counts(conn: Any, expected: Mapping[str, Any]) -> list[CheckResult]:
    """``SELECT COUNT(*)`` (and ``CHECKSUM TABLE`` when a checksum is expected) per table."""
    results = []
    for name, want in sorted(expected.items()):
        rows_wanted = want["rows"] if isinstance(want, Mapping) else want
        checksum_wanted = want.get("checksum") if isinstance(want, Mapping) else None
        try:
            table = _qualified(name)
            rows = _query(conn, f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: S608 - identifiers validated
            problems = [] if rows == rows_wanted else [f"{rows} rows, expected {rows_wanted}"]
            observed: dict[str, Any] = {"rows": rows}
            if checksum_wanted is not None:
                checksum = _query(conn, f"CHECKSUM TABLE {table}")[0][1]
                observed["checksum"] = checksum
                if checksum != checksum_wanted:
                    problems.append(f"checksum {checksum}, expected {checksum_wanted}")
        except Exception as exc:
            results.append(CheckResult("data_integrity", f"rows {name}", FAILED, f"cannot count: {exc}", want))
            continue
        results.append(CheckResult("data_integrity", f"rows {name}", FAILED if problems else PASSED,
                                   "; ".join(problems) or f"{rows} rows", want, observed))
    return results


def check_orphans(conn: Any, database: str, checks: Sequence[OrphanCheck]) -> list[CheckResult]:
    """Child rows pointing at a parent that does not exist (NULL references are not orphans)."""
    results = []
    for c in checks:
        child, parent = _qualified(f"{database}.{c.child_table}"), _qualified(f"{database}.{c.parent_table}")
        where = (
            f"FROM {child} c LEFT JOIN {parent} p ON p.`{c.parent_column}` = c.`{c.child_column}` "
            f"WHERE c.`{c.child_column}` IS NOT NULL AND p.`{c.parent_column}` IS NULL"
        )
        try:
            count = _query(conn, f"SELECT COUNT(*) {where}")[0][0]  # noqa: S608 - identifiers validated
            sample = [r[0] for r in _query(conn, f"SELECT DISTINCT c.`{c.child_column}` {where} LIMIT {MAX_LISTED}")]
        except Exception as exc:
            results.append(CheckResult("data_integrity", f"orphans: {c.name}", FAILED, f"cannot check: {exc}"))
            continue
        link = f"{c.child_table}.{c.child_column} -> {c.parent_table}.{c.parent_column}"
        if count:
            detail = f"{count} rows of {link} point nowhere, e.g. {', '.join(map(str, sample))}"
        else:
            detail = f"none ({link})"
        results.append(CheckResult("data_integrity", f"orphans: {c.name}", FAILED if count else PASSED,
                                   detail, 0, {"orphans": count, "sample": [str(v) for v in sample]}))
    return results


def check_files(entries: Sequence[Mapping[str, Any]], root: str | Path | None = None) -> list[CheckResult]:
    """Each listed file exists with its size and sha256; one result summarising all files."""
    missing, wrong_size, wrong_sha = [], [], []
    for entry in entries:
        path = Path(root, entry["path"]) if root else Path(entry["path"])
        if not path.is_file():
            missing.append(str(path))
            continue
        if entry.get("size") is not None and path.stat().st_size != entry["size"]:
            wrong_size.append(str(path))
            continue
        if sha256_file(path)[1] != entry["sha256"]:
            wrong_sha.append(str(path))
    problems = {"missing": missing, "size_mismatch": wrong_size, "sha256_mismatch": wrong_sha}
    bad = {k: v for k, v in problems.items() if v}
    if not bad:
        return [CheckResult("data_integrity", "file checksums", PASSED, f"{len(entries)} files match", len(entries))]
    detail = "; ".join(f"{k.replace('_', ' ')}: {len(v)} ({', '.join(v[:MAX_LISTED])})" for k, v in bad.items())
    observed = {k: v[:100] for k, v in bad.items()}
    return [CheckResult("data_integrity", "file checksums", FAILED, detail, len(entries), observed)]


# --- core functions -------------------------------------------------------------------------

def check_sql_smoke(conn: Any, database: str, checks: Sequence[SqlSmoke]) -> list[CheckResult]:
    """Each statement runs in a read-only transaction and must return at least ``min_rows`` rows."""
    results = []
    for c in checks:
        if not READ_ONLY_SQL.match(c.sql):
            results.append(CheckResult("core_functions", c.name, FAILED, "refused: not a read-only statement"))
            continue
        try:
            _query(conn, f"USE `{database}`")
            _query(conn, "START TRANSACTION READ ONLY")
            try:
                rows = len(_query(conn, c.sql))
            finally:
                _query(conn, "ROLLBACK")
        except Exception as exc:
            results.append(CheckResult("core_functions", c.name, FAILED, f"query failed: {exc}", c.min_rows))
            continue
        ok = rows >= c.min_rows
        results.append(CheckResult("core_functions", c.name, PASSED if ok else FAILED,
                                   f"{rows} rows" + ("" if ok else f", expected at least {c.min_rows}"),
                                   c.min_rows, rows))
    return results


def check_http_smoke(checks: Sequence[HttpSmoke]) -> list[CheckResult]:
    results = []
    for c in checks:
        r = probe_http(c.check)
        results.append(CheckResult("core_functions", f"{c.name}: {r.check}", PASSED if r.healthy else FAILED,
                                   r.detail, c.check.expect_status))
    return results


# --- metrics --------------------------------------------------------------------------------

def check_mysql_metrics(conn: Any, thresholds: MetricThresholds) -> list[CheckResult]:
    """Manual §1.2.1: ``SHOW STATUS LIKE 'Threads_connected'`` against its maximum."""
    limit = thresholds.mysql_threads_connected_max
    try:
        value = int(_query(conn, "SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1])
    except Exception as exc:
        return [CheckResult("metrics", "mysql Threads_connected", FAILED, f"cannot read: {exc}", limit)]
    ok = value <= limit
    return [CheckResult("metrics", "mysql Threads_connected", PASSED if ok else FAILED,
                        f"{value} connected, max {limit}", limit, value)]


def check_redis_metrics(client: Any, thresholds: MetricThresholds) -> list[CheckResult]:
    """Manual §1.2.1: cache hit rate from ``INFO stats``; too few lookups to judge is a skip."""
    minimum = thresholds.redis_hit_rate_min
    try:
        stats = client.info("stats")
        hits, misses = int(stats["keyspace_hits"]), int(stats["keyspace_misses"])
    except Exception as exc:
        return [CheckResult("metrics", "redis hit rate", FAILED, f"cannot read: {exc}", minimum)]
    lookups = hits + misses
    if lookups < max(1, thresholds.redis_min_lookups):
        return [CheckResult("metrics", "redis hit rate", SKIPPED,
                            f"only {lookups} lookups since the server started; need {thresholds.redis_min_lookups}",
                            minimum, {"hits": hits, "misses": misses})]
    rate = hits / lookups
    ok = rate >= minimum
    return [CheckResult("metrics", "redis hit rate", PASSED if ok else FAILED,
                        f"{rate:.1%} of {lookups} lookups, min {minimum:.0%}", minimum, round(rate, 4))]


def check_disk_free(paths: Sequence[Path], min_free_percent: float) -> list[CheckResult]:
    """Free space on the file systems holding ``paths`` (on the worker running the check)."""
    results = []
    for path in paths:
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            results.append(CheckResult("metrics", f"disk free {path}", FAILED, f"cannot read: {exc.strerror}",
                                       min_free_percent))
            continue
        free = 100.0 * usage.free / usage.total if usage.total else 0.0
        ok = free >= min_free_percent
        results.append(CheckResult("metrics", f"disk free {path}", PASSED if ok else FAILED,
                                   f"{free:.1f}% free ({usage.free // 2**30} GiB), min {min_free_percent:g}%",
                                   min_free_percent, round(free, 2)))
    return results


# --- one group ------------------------------------------------------------------------------

@dataclass
class VerifySources:
    """What the checks read from; connections are opened only by the groups that need them."""

    settings: VerifySettings
    thresholds: MetricThresholds
    inventory: ServiceInventory
    mysql: Callable[[], Any]
    redis: Callable[[], Any]
    expectations: Expectations = field(default_factory=Expectations)
    services: Sequence[str] | None = None


def _with_mysql(group: str, sources: VerifySources, run: Callable[[Any], list[CheckResult]]) -> list[CheckResult]:
    try:
        conn = sources.mysql()
    except Exception as exc:
        return [CheckResult(group, "mysql connection", FAILED, f"cannot connect: {type(exc).__name__}: {exc}")]
    try:
        return run(conn)
    finally:
        conn.close()


def run_group(group: str, sources: VerifySources) -> list[CheckResult]:
    """Run one verification group; never raises for a failed check, only for a bad group name."""
    s, e = sources.settings, sources.expectations
    if group == "service_status":
        return check_service_status(sources.inventory, sources.services)
    if group == "data_integrity":
        results = []
        if e.empty:
            results.append(CheckResult(group, "rows and files vs backup", SKIPPED, "no expectations given"))
        if e.files:
            results += check_files(e.files, e.files_root)
        if e.tables or s.orphan_checks:
            results += _with_mysql(group, sources, lambda conn: (
                check_row_counts(conn, e.tables) + check_orphans(conn, s.database, s.orphan_checks)))
        return results
    if group == "core_functions":
        results = check_http_smoke(s.http_smoke)
        if s.sql_smoke:
            results = _with_mysql(group, sources, lambda conn: check_sql_smoke(conn, s.database, s.sql_smoke)) + results
        return results
    if group == "metrics":
        t = sources.thresholds
        results = _with_mysql(group, sources, lambda conn: check_mysql_metrics(conn, t))
        try:
            client = sources.redis()
        except Exception as exc:
            results.append(CheckResult(group, "redis connection", FAILED, f"cannot connect: {exc}"))
        else:
            results += check_redis_metrics(client, t)
        return results + check_disk_free(t.disk_paths, t.disk_free_percent_min)
    raise ValueError(f"unknown verification group {group!r}; expected one of {', '.join(GROUPS)}")


__all__ = ["GROUPS", "CheckResult", "ConfigError", "Expectations", "VerifySources", "load_expectations",
           "load_thresholds", "load_verify_settings", "run_group"]
