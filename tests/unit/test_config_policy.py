"""A bad backup_policy.yaml fails with one clear error: the file, the key and the reason, also as
the DAG's import error in the Airflow UI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from aiplatform_ops.config import ConfigError, load_backup_policy

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "include" / "config" / "backup_policy.yaml").read_text())


def with_database(**changes) -> dict:
    policy = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        if value is KeyError:
            del policy["database_backup"][key]
        else:
            policy["database_backup"][key] = value
    return policy


BAD = {
    "missing key": (with_database(retention_days=KeyError), "database_backup.retention_days", "missing"),
    "wrong type": (with_database(retention_days="thirty"), "database_backup.retention_days", "expected an integer"),
    "zero days": (with_database(retention_days=0), "database_backup.retention_days", "at least 1"),
    "bad cron": (with_database(schedule="0 2 * *"), "database_backup.schedule", "does not match"),
    "relative path": (with_database(locations=["backup/db/daily", "s3://backup/db/daily"]),
                      "database_backup.locations", "'backup/db/daily' is neither an absolute path"),
    "two s3 locations": (with_database(locations=["/backup/db/daily", "s3://backup/db/daily", "s3://other/db"]),
                         "database_backup.locations", "more than one s3:// location"),
    "no local folder": (with_database(locations=["s3://backup/db/daily"]), "database_backup.locations",
                        "needs one local folder"),
    "bad weekday": (with_database(full_backup_weekday="funday"), "database_backup.full_backup_weekday",
                    "expected a weekday name"),
    "bad deadline": (with_database(deadline="25:00"), "database_backup.deadline", "expected HH:MM"),
    "deadline at the start": (with_database(deadline="02:00"), "database_backup.deadline", "equals the scheduled start"),
    "no databases": (with_database(databases=[]), "database_backup.databases", "at least one"),
    "bad type": (with_database(type="differential"), "database_backup.type", "expected one of incremental"),
}


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of include/config (every DAG finds its files) in force through the environment."""
    folder = tmp_path / "config"
    shutil.copytree(REPO / "include" / "config", folder)
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(folder))
    return folder


def write_policy(folder: Path, policy: dict) -> Path:
    path = folder / "backup_policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def test_the_shipped_policy_is_the_manuals(config_dir: Path) -> None:
    policy = load_backup_policy()
    assert policy.file == config_dir / "backup_policy.yaml"
    db = policy.database
    assert (db.schedule, db.retention_days) == ("0 2 * * *", 30)
    assert db.locations.urls() == ["/backup/db/daily", "s3://backup/db/daily"]
    assert db.full_backup_weekday == 6 and db.deadline is not None and db.deadline.total_seconds() == 4 * 3600


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_policy_names_file_key_and_reason(config_dir: Path, case: str) -> None:
    policy, key, reason = BAD[case]
    path = write_policy(config_dir, policy)
    with pytest.raises(ConfigError) as err:
        load_backup_policy()
    assert err.value.file == str(path)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_unreadable_yaml_and_a_missing_file_name_the_file(config_dir: Path) -> None:
    path = config_dir / "backup_policy.yaml"
    path.write_text("database_backup: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_backup_policy()
    assert err.value.file == str(path)
    path.unlink()
    with pytest.raises(ConfigError, match="file not found"):
        load_backup_policy()


@pytest.mark.parametrize("case", ["wrong type", "bad cron", "two s3 locations", "bad deadline"])
def test_the_dag_shows_the_same_message_as_its_one_import_error(config_dir: Path, case: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    policy, key, reason = BAD[case]
    path = write_policy(config_dir, policy)
    with pytest.raises(ConfigError) as err:
        load_backup_policy()
    dag_file = str(REPO / "dags" / "aiplatform_db_backup.py")
    bag = DagBag(dag_folder=dag_file)
    assert "aiplatform_db_backup" not in bag.dags
    assert list(bag.import_errors) == [dag_file]
    text = bag.import_errors[dag_file]
    assert str(err.value) in text
    assert str(path) in text and key in text and reason in text
    assert text.count(str(err.value)) == 1


def test_the_dag_folder_reports_the_backup_dag_as_broken(config_dir: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    policy, _, _ = BAD["missing key"]
    write_policy(config_dir, policy)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    dag_file = str(REPO / "dags" / "aiplatform_db_backup.py")
    assert dag_file in bag.import_errors
    assert "database_backup.retention_days: missing" in bag.import_errors[dag_file]
    assert "aiplatform_db_backup" not in bag.dags


def test_a_good_policy_parses_the_dag(config_dir: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    policy = with_database(schedule="30 1 * * *", retention_days=7)
    write_policy(config_dir, policy)
    dag_file = str(REPO / "dags" / "aiplatform_db_backup.py")
    bag = DagBag(dag_folder=dag_file)
    assert bag.import_errors == {}
    dag = bag.dags["aiplatform_db_backup"]
    assert "7 days" in dag.doc_md and "30 1 * * *" in dag.doc_md
