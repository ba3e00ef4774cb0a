"""Units of the database backup: which binary logs to archive, full or incremental, the defaults
file, and the manifest's own validation."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from aiplatform_ops.backup.binlog import BinlogCoordinate, BinlogGapError, logs_to_archive
from aiplatform_ops.backup.database import DatabaseBackupSettings, choose_backup_type
from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry, ManifestError, iso

SHA = "ab" * 32

# --- logs_to_archive ---------------------------------------------------------------------------


def logs(*sizes_by_index: tuple[int, int]) -> list[tuple[str, int]]:
    return [(f"binlog.{i:06d}", size) for i, size in sizes_by_index]


def test_the_closed_logs_after_the_chain_end_are_archived_but_not_the_current_one() -> None:
    server = logs((3, 900), (4, 5000), (5, 7000), (6, 365))  # 6 is the fresh log after FLUSH
    wanted = logs_to_archive(BinlogCoordinate("binlog.000004", 1200), server)
    assert wanted == logs((4, 5000), (5, 7000))


def test_a_log_already_covered_to_its_end_is_not_archived_again() -> None:
    server = logs((4, 5000), (5, 7000), (6, 365))
    assert logs_to_archive(BinlogCoordinate("binlog.000004", 5000), server) == logs((5, 7000))


def test_nothing_new_when_the_chain_ends_at_the_last_closed_log() -> None:
    server = logs((4, 5000), (5, 365))
    assert logs_to_archive(BinlogCoordinate("binlog.000004", 5000), server) == []


def test_a_purged_log_is_a_gap_naming_it_and_the_oldest_left() -> None:
    server = logs((7, 900), (8, 365))
    with pytest.raises(BinlogGapError) as err:
        logs_to_archive(BinlogCoordinate("binlog.000004", 1200), server)
    message = str(err.value)
    assert "binlog.000004" in message and "binlog.000007" in message and "purged" in message


def test_a_reset_server_is_a_gap() -> None:
    """RESET MASTER: the same file name exists again, but shorter than where the chain ended."""
    server = logs((1, 400), (2, 365))
    with pytest.raises(BinlogGapError, match="reset"):
        logs_to_archive(BinlogCoordinate("binlog.000001", 9000), server)


def test_non_contiguous_logs_are_a_gap() -> None:
    server = logs((4, 5000), (5, 7000), (7, 800), (8, 365))
    with pytest.raises(BinlogGapError, match="not contiguous"):
        logs_to_archive(BinlogCoordinate("binlog.000004", 1200), server)


def test_a_server_listing_no_logs_is_a_gap() -> None:
    with pytest.raises(BinlogGapError):
        logs_to_archive(BinlogCoordinate("binlog.000004", 1200), [])


# --- choose_backup_type ------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # a Wednesday (weekday 2)
SETTINGS = DatabaseBackupSettings(databases=("aiplatform",), full_backup_weekday=None, max_chain_length=3)


def chain_of(incrementals: int, *, start: datetime = NOW - timedelta(days=1), databases=("aiplatform",),
             binlog_end: dict | None = None) -> list[BackupManifest]:
    end = {"file": "binlog.000004", "position": 1200} if binlog_end is None else binlog_end
    full_id = f"{start:%Y%m%dT%H%M%SZ}-full"
    members = [BackupManifest(
        backup_id=full_id, kind="database", type="full", started_at=iso(start),
        finished_at=iso(start + timedelta(minutes=5)), files=[], chain_id=full_id,
        details={"databases": list(databases), "binlog": {"end": end or None}},
    )]
    for i in range(incrementals):
        when = start + timedelta(hours=i + 1)
        members.append(BackupManifest(
            backup_id=f"{when:%Y%m%dT%H%M%SZ}-incr", kind="database", type="incremental", started_at=iso(when),
            finished_at=iso(when + timedelta(minutes=1)), files=[], parent_id=members[-1].backup_id,
            chain_id=full_id, details={"databases": list(databases), "binlog": {"end": end}},
        ))
    return members


def test_the_first_run_is_full() -> None:
    assert choose_backup_type([], None, True, SETTINGS, NOW)[0] == "full"


def test_an_open_chain_is_extended() -> None:
    kind, reason = choose_backup_type(chain_of(1), None, True, SETTINGS, NOW)
    assert kind == "incremental" and "chain" in reason


def test_the_policy_weekday_starts_a_new_chain_once() -> None:
    weekly = DatabaseBackupSettings(databases=("aiplatform",), full_backup_weekday=NOW.weekday(), max_chain_length=30)
    kind, reason = choose_backup_type(chain_of(2), None, True, weekly, NOW)
    assert kind == "full" and "weekday" in reason
    # A chain started that same day (the weekday's full already ran) is extended, not restarted.
    started_today = chain_of(1, start=NOW - timedelta(minutes=30))
    assert choose_backup_type(started_today, None, True, weekly, NOW)[0] == "incremental"
    # Other days extend the chain.
    other_day = DatabaseBackupSettings(databases=("aiplatform",), full_backup_weekday=(NOW.weekday() + 1) % 7)
    assert choose_backup_type(chain_of(2), None, True, other_day, NOW)[0] == "incremental"


def test_the_maximum_chain_length_starts_a_new_chain() -> None:
    assert choose_backup_type(chain_of(2), None, True, SETTINGS, NOW)[0] == "incremental"
    kind, reason = choose_backup_type(chain_of(3), None, True, SETTINGS, NOW)
    assert kind == "full" and "max_chain_length" in reason


def test_a_broken_chain_starts_a_new_one_and_says_why() -> None:
    broken = {"chain_id": "x", "reason": "binary log binlog.000004 was purged"}
    kind, reason = choose_backup_type(chain_of(1), broken, True, SETTINGS, NOW)
    assert kind == "full" and "binlog.000004 was purged" in reason


def test_binary_logs_off_means_full_every_time() -> None:
    kind, reason = choose_backup_type(chain_of(1), None, False, SETTINGS, NOW)
    assert kind == "full" and "binary logs" in reason


def test_a_chain_without_a_binlog_position_cannot_be_extended() -> None:
    """A full backup taken while binary logs were off does not start an extendable chain."""
    assert choose_backup_type(chain_of(0, binlog_end={}), None, True, SETTINGS, NOW)[0] == "full"


def test_changed_databases_start_a_new_chain() -> None:
    chain = chain_of(1, databases=("aiplatform", "old_db"))
    kind, reason = choose_backup_type(chain, None, True, SETTINGS, NOW)
    assert kind == "full" and "databases changed" in reason


# --- defaults_file -----------------------------------------------------------------------------

NASTY = 'p"a\'s\\s #w;o rd\\"'


def parsed_client_options(path) -> dict[str, str]:
    """The options a MariaDB client reads from the file (``my_print_defaults`` parses like the tools)."""
    out = subprocess.run(["my_print_defaults", f"--defaults-file={path}", "client"], capture_output=True,
                         text=True, check=True).stdout
    options = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("--").partition("=")
        options[key] = value
    return options


def test_the_defaults_file_is_private_quoted_and_removed() -> None:
    target = MySQLTarget("127.0.0.1", 3307, "back up'er", NASTY)
    with defaults_file(target) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        options = parsed_client_options(path)
        assert options["password"] == NASTY
        assert options["user"] == "back up'er"
        assert options["port"] == "3307" and options["host"] == "127.0.0.1"
        argv = client_argv("mariadb-dump", path, "--databases", "x")
        assert argv[1] == f"--defaults-extra-file={path}"
        assert not any(NASTY in arg for arg in argv)
    assert not path.exists()


def test_the_defaults_file_is_removed_when_the_tool_fails() -> None:
    target = MySQLTarget("127.0.0.1", 3307, "u", "secret")
    with pytest.raises(RuntimeError), defaults_file(target) as path:
        raise RuntimeError("mariadb-dump failed")
    assert not path.exists()


def test_the_password_is_not_in_the_targets_repr() -> None:
    assert "s3cr3t-value" not in repr(MySQLTarget("h", 1, "u", "s3cr3t-value"))


# --- BackupManifest validation -----------------------------------------------------------------


def manifest(**overrides) -> BackupManifest:
    values = dict(backup_id="20261125T020000Z-full", kind="database", type="full",
                  started_at="2026-11-25T02:00:00.000000Z", finished_at="2026-11-25T02:05:00.000000Z",
                  files=[FileEntry("a.sql.zst", 10, SHA)], chain_id="20261125T020000Z-full")
    values.update(overrides)
    return BackupManifest(**values)


@pytest.mark.parametrize("backup_id", ["", "latest", "2026-11-25-full", "20261125T020000Z-../x", "../20261125T020000Z-full",
                                       "20261125T020000Z-FULL", "20261125T020000Z-"])
def test_a_bad_backup_id_is_refused(backup_id: str) -> None:
    with pytest.raises(ManifestError, match="backup id"):
        manifest(backup_id=backup_id)


def test_an_incremental_needs_a_parent() -> None:
    with pytest.raises(ManifestError, match="parent"):
        manifest(backup_id="20261125T020000Z-incr", type="incremental", parent_id=None)
    assert manifest(backup_id="20261125T020000Z-incr", type="incremental", parent_id="20261124T020000Z-full")


def test_a_file_listed_twice_is_refused() -> None:
    with pytest.raises(ManifestError, match="twice"):
        manifest(files=[FileEntry("a.sql.zst", 10, SHA), FileEntry("a.sql.zst", 11, SHA)])


@pytest.mark.parametrize("sha", ["", "ab" * 31, "AB" * 32, "zz" * 32, "ab" * 33])
def test_a_bad_sha256_is_refused(sha: str) -> None:
    with pytest.raises(ManifestError, match="sha256"):
        FileEntry("a.sql.zst", 10, sha)


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../outside", "a/../../b", "manifest.json"])
def test_a_file_name_outside_the_backup_is_refused(name: str) -> None:
    with pytest.raises(ManifestError):
        FileEntry(name, 10, SHA)


def test_unknown_kind_and_type_are_refused() -> None:
    with pytest.raises(ManifestError, match="kind"):
        manifest(kind="tape")
    with pytest.raises(ManifestError, match="type"):
        manifest(type="differential")


def test_a_manifest_survives_its_json_and_a_damaged_one_is_refused() -> None:
    original = manifest(details={"tables": {"a.t": 3}})
    assert BackupManifest.from_json(original.to_json()) == original
    with pytest.raises(ManifestError, match="where"):
        BackupManifest.from_json(original.to_json()[:-20], "where")
    with pytest.raises(ManifestError, match="format"):
        BackupManifest.from_json(original.to_json().replace(b'"format": 1', b'"format": 99'))
