"""verify.yaml, thresholds.yaml and expectations: shipped files load, bad ones name file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aiplatform_ops.config import ConfigError
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry
from aiplatform_ops.verify.checks import load_expectations, load_thresholds, load_verify_settings

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config"


def test_shipped_settings_check_the_manuals_tables():
    settings = load_verify_settings(SHIPPED)
    assert ("ai_dataset_file", "dataset_id", "ai_dataset", "id") in {
        (c.child_table, c.child_column, c.parent_table, c.parent_column) for c in settings.orphan_checks}
    assert settings.sql_smoke and settings.report_dir.is_absolute()
    t = load_thresholds(SHIPPED)
    assert t.mysql_threads_connected_max > 0 and 0 < t.redis_hit_rate_min <= 1 and t.disk_paths


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    for shipped in ("verify.yaml", "thresholds.yaml"):
        (tmp_path / shipped).write_text((SHIPPED / shipped).read_text())
    (tmp_path / name).write_text(yaml.safe_dump(data))
    return tmp_path


@pytest.mark.parametrize(("name", "change", "key", "reason"), [
    ("verify.yaml", lambda d: d["smoke"]["sql"][0].update(sql="DELETE FROM ai_dataset"), "smoke.sql[0].sql", "SELECT"),
    ("verify.yaml", lambda d: d["smoke"]["sql"][0].update(sql="SELECT 1; DROP TABLE ai_dataset"), "smoke.sql[0].sql",
     "one SELECT"),
    ("verify.yaml", lambda d: d["orphan_checks"][0].update(child="ai_dataset_file"), "orphan_checks[0].child",
     "does not match"),
    ("verify.yaml", lambda d: d.update(report_dir="reports"), "report_dir", "absolute"),
    ("verify.yaml", lambda d: d.update(orphans=[]), "orphans", "unknown key"),
    ("thresholds.yaml", lambda d: d["redis"].update(hit_rate_min=80), "redis.hit_rate_min", "fraction"),
    ("thresholds.yaml", lambda d: d["disk"].update(paths=["backup"]), "disk.paths", "absolute"),
    ("thresholds.yaml", lambda d: d.pop("mysql"), "mysql", "missing"),
])
def test_invalid_settings_name_file_key_and_reason(tmp_path, name, change, key, reason):
    data = yaml.safe_load((SHIPPED / name).read_text())
    change(data)
    folder = _write(tmp_path, name, data)
    with pytest.raises(ConfigError) as error:
        (load_verify_settings if name == "verify.yaml" else load_thresholds)(folder)
    assert (error.value.file, error.value.key) == (str(folder / name), key)
    assert reason in error.value.reason


def test_expectations_from_a_file_or_a_mapping(tmp_path):
    path = tmp_path / "expected.json"
    path.write_text(json.dumps({"tables": {"aiplatform.ai_dataset": 3}, "files": [{"path": "a", "size": 1, "sha256": "0" * 64}]}))
    assert load_expectations(str(path)).tables == {"aiplatform.ai_dataset": 3}
    assert load_expectations({"files_root": "/data", "files": []}).files_root == "/data"
    assert load_expectations("None").empty and load_expectations(None).empty
    with pytest.raises(ConfigError, match="tables"):
        load_expectations({"tables": {"ai_dataset": 3}})


def test_expectations_from_a_full_database_backup_manifest(tmp_path):
    manifest = BackupManifest(
        backup_id="20261128T020000Z-full", kind="database", type="full",
        started_at="2026-11-28T02:00:00.000000Z", finished_at="2026-11-28T02:01:00.000000Z",
        files=[FileEntry("aiplatform.ai_dataset.sql.zst", 10, "a" * 64)],
        details={"tables": {"aiplatform.ai_dataset": 1200, "aiplatform.ai_dataset_file": 5400}},
    )
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.to_json())
    assert load_expectations(str(path)).tables == {"aiplatform.ai_dataset": 1200, "aiplatform.ai_dataset_file": 5400}

    incremental = json.loads(manifest.to_json()) | {"type": "incremental", "parent_id": "20261127T020000Z-full"}
    with pytest.raises(ConfigError, match="not a full database backup"):
        load_expectations(incremental)
