"""Policies from the config directory, validated on load.

Every schedule, retention, path, bucket and threshold comes from ``include/config`` (or the folder
named by ``AIPLATFORM_OPS_CONFIG_DIR``). A bad file fails with the file, the key and the reason,
so a typo shows up as one clear import error in the Airflow UI instead of a 2 a.m. surprise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR_ENV = "AIPLATFORM_OPS_CONFIG_DIR"

# Airflow connection ids: a stable interface users and scripts rely on.
MYSQL_CONN_ID = "aiplatform_mysql"
S3_CONN_ID = "aiplatform_s3"
REDIS_CONN_ID = "aiplatform_redis"
K8S_CONN_ID = "aiplatform_k8s"
SSH_CONN_ID = "aiplatform_ssh"
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "include" / "config"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ConfigError(ValueError):
    """A config file is missing, unreadable or holds an invalid value."""

    def __init__(self, file: Path | str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = str(file), key, reason
        super().__init__(f"{file}: {key}: {reason}")


def config_dir() -> Path:
    """The config directory in force: ``$AIPLATFORM_OPS_CONFIG_DIR`` or ``include/config``."""
    return Path(os.environ.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR)


def load_yaml(name: str, directory: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Read one YAML mapping from the config directory."""
    path = (directory or config_dir()) / name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "(file)", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "(file)", "expected a mapping at the top level")
    return path, data


class Section:
    """Typed access to one mapping of a config file; errors name the full key."""

    def __init__(self, file: Path, data: Any, key: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, key or "(file)", "expected a mapping")
        self.file, self.data, self.key = file, data, key

    def _name(self, key: str) -> str:
        return f"{self.key}.{key}" if self.key else key

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self._name(key), reason)

    def section(self, key: str, *, required: bool = True) -> Section:
        if key not in self.data:
            if required:
                raise self.error(key, "missing")
            return Section(self.file, {}, self._name(key))
        return Section(self.file, self.data[key], self._name(key))

    def raw(self, key: str, default: Any = ..., *, required: bool = True) -> Any:
        if key in self.data:
            return self.data[key]
        if default is ... and required:
            raise self.error(key, "missing")
        return None if default is ... else default

    def string(self, key: str, default: Any = ..., *, pattern: str | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        if pattern and not re.fullmatch(pattern, value):
            raise self.error(key, f"{value!r} does not match {pattern}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.raw(key, None)
        return None if value is None else self.string(key)

    def integer(self, key: str, default: Any = ..., *, minimum: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"expected at least {minimum}, got {value}")
        return value

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        return None if self.raw(key, None) is None else self.integer(key, minimum=minimum)

    def number(self, key: str, default: Any = ..., *, minimum: float | None = None) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"expected at least {minimum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def strings(self, key: str, default: Any = ..., *, non_empty: bool = True) -> tuple[str, ...]:
        value = self.raw(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        if non_empty and not value:
            raise self.error(key, "expected at least one entry")
        return tuple(value)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


CRON_FIELD = r"[\d*/,\-A-Za-z?]+"
CRON_PATTERN = rf"{CRON_FIELD}( {CRON_FIELD}){{4}}"


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix`` split in its parts; the prefix has no leading or trailing slash."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?", url)
        if not match:
            raise ValueError(f"expected s3://bucket/prefix, got {url!r}")
        return cls(match.group(1), (match.group(2) or "").strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class Locations:
    """Where a kind of backup is kept: one local folder and, optionally, one S3 prefix."""

    local: Path
    s3: S3Url | None

    @classmethod
    def read(cls, section: Section, key: str = "locations") -> Locations:
        local: Path | None = None
        s3: S3Url | None = None
        for url in section.strings(key):
            if url.startswith("s3://"):
                if s3 is not None:
                    raise section.error(key, "more than one s3:// location")
                try:
                    s3 = S3Url.parse(url)
                except ValueError as exc:
                    raise section.error(key, str(exc)) from None
            elif url.startswith("/"):
                if local is not None:
                    raise section.error(key, "more than one local folder")
                local = Path(url)
            else:
                raise section.error(key, f"{url!r} is neither an absolute path nor s3://bucket/prefix")
        if local is None:
            raise section.error(key, "needs one local folder (an absolute path)")
        return cls(local, s3)

    def urls(self) -> list[str]:
        return [str(self.local)] + ([str(self.s3)] if self.s3 else [])


def _deadline(section: Section, schedule: str) -> timedelta | None:
    """Turn ``deadline: "06:00"`` into the time allowed after the scheduled start."""
    value = section.optional_string("deadline")
    if value is None:
        return None
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if not match:
        raise section.error("deadline", f"expected HH:MM, got {value!r}")
    minute, hour = schedule.split()[:2]
    if not (minute.isdigit() and hour.isdigit()):
        raise section.error("deadline", f"needs a schedule with a fixed hour and minute, got {schedule!r}")
    start = int(hour) * 60 + int(minute)
    end = int(match.group(1)) * 60 + int(match.group(2))
    allowed = (end - start) % (24 * 60)
    if allowed == 0:
        raise section.error("deadline", "equals the scheduled start")
    return timedelta(minutes=allowed)


@dataclass(frozen=True)
class DatabaseBackupPolicy:
    """Manual §2.1.1: incremental, daily 02:00, 30 days, local + S3."""

    schedule: str
    retention_days: int
    locations: Locations
    databases: tuple[str, ...]
    full_backup_weekday: int | None
    max_chain_length: int
    binlog_archive_interval_minutes: int | None
    deadline: timedelta | None
    compression_level: int
    s3_server_side_encryption: str | None
    parallel_restore_threads: int

    @classmethod
    def read(cls, s: Section) -> DatabaseBackupPolicy:
        s.choice("type", ("incremental",))
        schedule = s.string("schedule", pattern=CRON_PATTERN)
        weekday = s.raw("full_backup_weekday", None)
        if weekday is not None and str(weekday).lower() not in WEEKDAYS:
            raise s.error("full_backup_weekday", f"expected a weekday name or null, got {weekday!r}")
        return cls(
            schedule=schedule,
            retention_days=s.integer("retention_days", minimum=1),
            locations=Locations.read(s),
            databases=s.strings("databases"),
            full_backup_weekday=None if weekday is None else WEEKDAYS.index(str(weekday).lower()),
            max_chain_length=s.integer("max_chain_length", 7, minimum=1),
            binlog_archive_interval_minutes=s.optional_integer("binlog_archive_interval_minutes", minimum=1),
            deadline=_deadline(s, schedule),
            compression_level=s.integer("compression_level", 3, minimum=1),
            s3_server_side_encryption=s.optional_string("s3_server_side_encryption"),
            parallel_restore_threads=s.integer("parallel_restore_threads", 2, minimum=1),
        )


@dataclass(frozen=True)
class FileBackupPolicy:
    """Manual §2.1.2: full, Sunday 03:00, 90 days, local + S3."""

    schedule: str
    retention_days: int
    locations: Locations
    roots: tuple[Path, ...]
    exclude: tuple[str, ...]
    part_size_mb: int
    allow_unreadable: bool
    compression_level: int
    s3_server_side_encryption: str | None
    deadline: timedelta | None

    @classmethod
    def read(cls, s: Section) -> FileBackupPolicy:
        s.choice("type", ("full",))
        schedule = s.string("schedule", pattern=CRON_PATTERN)
        roots = s.strings("roots")
        for root in roots:
            if not root.startswith("/"):
                raise s.error("roots", f"{root!r} is not an absolute path")
        return cls(
            schedule=schedule,
            retention_days=s.integer("retention_days", minimum=1),
            locations=Locations.read(s),
            roots=tuple(Path(r) for r in roots),
            exclude=s.strings("exclude", [], non_empty=False),
            part_size_mb=s.integer("part_size_mb", 1024, minimum=1),
            allow_unreadable=s.boolean("allow_unreadable", False),
            compression_level=s.integer("compression_level", 3, minimum=1),
            s3_server_side_encryption=s.optional_string("s3_server_side_encryption"),
            deadline=_deadline(s, schedule),
        )


@dataclass(frozen=True)
class ConfigBackupPolicy:
    """Manual §2.1.3: full, on every change, last 10 versions, local + S3."""

    watch_schedule: str
    retention_versions: int
    locations: Locations
    paths: tuple[Path, ...]
    exclude: tuple[str, ...]
    s3_server_side_encryption: str | None

    @classmethod
    def read(cls, s: Section) -> ConfigBackupPolicy:
        s.choice("type", ("full",))
        s.choice("trigger", ("on-change",))
        paths = s.strings("paths")
        for path in paths:
            if not path.startswith("/"):
                raise s.error("paths", f"{path!r} is not an absolute path")
        return cls(
            watch_schedule=s.string("watch_schedule", pattern=CRON_PATTERN),
            retention_versions=s.integer("retention_versions", minimum=1),
            locations=Locations.read(s),
            paths=tuple(Path(p) for p in paths),
            exclude=s.strings("exclude", [], non_empty=False),
            s3_server_side_encryption=s.optional_string("s3_server_side_encryption"),
        )


@dataclass(frozen=True)
class RestoreDrillPolicy:
    """Manual §2.2: the weekly proof that the newest backups restore."""

    schedule: str = "0 5 * * 1"
    scratch_database: str = "aiplatform_restore_drill"
    scratch_folder: Path | None = None

    @classmethod
    def read(cls, s: Section) -> RestoreDrillPolicy:
        folder = s.optional_string("scratch_folder")
        if folder is not None and not folder.startswith("/"):
            raise s.error("scratch_folder", f"{folder!r} is not an absolute path")
        return cls(
            schedule=s.string("schedule", cls.schedule, pattern=CRON_PATTERN),
            scratch_database=s.string("scratch_database", cls.scratch_database, pattern=r"[A-Za-z0-9_]{1,64}"),
            scratch_folder=Path(folder) if folder else None,
        )


@dataclass(frozen=True)
class BackupPolicy:
    """The policies of ``backup_policy.yaml``."""

    file: Path
    database: DatabaseBackupPolicy
    files: FileBackupPolicy
    config: ConfigBackupPolicy
    drill: RestoreDrillPolicy = RestoreDrillPolicy()


def load_backup_policy(directory: Path | None = None) -> BackupPolicy:
    """Load and validate ``backup_policy.yaml``; raises :class:`ConfigError` naming file and key."""
    path, data = load_yaml("backup_policy.yaml", directory)
    root = Section(path, data)
    return BackupPolicy(
        file=path,
        database=DatabaseBackupPolicy.read(root.section("database_backup")),
        files=FileBackupPolicy.read(root.section("file_backup")),
        config=ConfigBackupPolicy.read(root.section("config_backup")),
        drill=RestoreDrillPolicy.read(root.section("restore_drill", required=False)),
    )
