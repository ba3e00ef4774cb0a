"""Config versions: one per real change, none for touches, the last 10 kept, diffs without secrets."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from aiplatform_ops.backup.config_set import (
    config_versions,
    detect_change,
    mask_secrets,
    restore_config_version,
    take_config_backup,
)
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.manifest import utc_now
from aiplatform_ops.storage.retention import apply_retention, plan_by_count

REPO = Path(__file__).resolve().parents[2]
SECRET = "Sup3r-S3cret-Value"


@pytest.fixture
def config_set(tmp_path: Path) -> tuple[list[Path], LocalStore]:
    """The project's sample config set (include/ copies of the manual's configs) in a temp tree."""
    etc = tmp_path / "etc"
    for folder in ("nginx", "k8s", "jvm"):
        shutil.copytree(REPO / "include" / folder, etc / folder)
    (etc / "redis").mkdir()
    redis_conf = etc / "redis/redis.conf"
    shutil.copy(REPO / "include/redis/redis.conf", redis_conf)
    with open(redis_conf, "a") as out:
        out.write(f"requirepass {SECRET}\n")
    (etc / "nginx/editor-backup.conf.swp").write_text("ignored")
    paths = [etc / "nginx", etc / "k8s", etc / "jvm", redis_conf]
    return paths, LocalStore(tmp_path / "versions")


EXCLUDE = ("*.swp", "*~")


def _versions(store: LocalStore) -> list[str]:
    return [m.backup_id for m in config_versions(store)]


def test_each_edit_makes_exactly_one_version_and_touches_make_none(config_set) -> None:
    paths, store = config_set
    first = take_config_backup(paths, store, exclude=EXCLUDE)
    assert first.new_version and len(_versions(store)) == 1

    again = take_config_backup(paths, store, exclude=EXCLUDE)
    assert not again.new_version and again.manifest.backup_id == first.manifest.backup_id

    upstreams = paths[0] / "aiplatform-upstreams.conf"
    os.utime(upstreams, ns=(1, 1))  # a touch: mtime only
    assert not take_config_backup(paths, store, exclude=EXCLUDE).new_version

    upstreams.write_text(upstreams.read_text().replace("keepalive 32", "keepalive 64"))
    second = take_config_backup(paths, store, exclude=EXCLUDE)
    assert second.new_version
    assert second.manifest.details["changes"]["changed"] == [str(upstreams).lstrip("/")]

    (paths[1] / "aiplatform-gateway.yaml").unlink()
    (paths[1] / "aiplatform-inference.yaml").write_text("kind: Deployment\n")
    third = take_config_backup(paths, store, exclude=EXCLUDE)
    changes = third.manifest.details["changes"]
    assert changes["previous_id"] == second.manifest.backup_id
    assert changes["added"] == [str(paths[1] / "aiplatform-inference.yaml").lstrip("/")]
    assert changes["removed"] == [str(paths[1] / "aiplatform-gateway.yaml").lstrip("/")]
    assert len(_versions(store)) == 3
    assert not [e for e in third.manifest.details["entries"] if e["path"].endswith(".swp")]


def test_a_permission_change_is_a_change(config_set) -> None:
    paths, store = config_set
    take_config_backup(paths, store, exclude=EXCLUDE)
    paths[3].chmod(0o600)
    assert take_config_backup(paths, store, exclude=EXCLUDE).new_version


def test_the_eleventh_version_expires_the_first(config_set) -> None:
    paths, store = config_set
    opts = paths[2] / "java-opts.sh"
    created = []
    for n in range(11):
        opts.write_text(f'JAVA_OPTS="-Xmx{n + 1}g"\n')
        created.append(take_config_backup(paths, store, exclude=EXCLUDE).manifest.backup_id)
    assert _versions(store) == created

    plan = plan_by_count(store.url, config_versions(store), 10)
    assert apply_retention(store, plan) == [created[0]]
    assert _versions(store) == created[1:]


def test_diff_in_the_log_shows_the_edit_and_masks_secrets(config_set, caplog) -> None:
    paths, store = config_set
    take_config_backup(paths, store, exclude=EXCLUDE)
    redis_conf = paths[3]
    text = redis_conf.read_text().replace("maxmemory 4gb", "maxmemory 8gb")
    redis_conf.write_text(text.replace(SECRET, "An0ther-S3cret"))
    with caplog.at_level(logging.INFO, logger="aiplatform_ops.backup.config_set"):
        result = take_config_backup(paths, store, exclude=EXCLUDE)
    log_text = caplog.text
    assert "-maxmemory 4gb" in log_text and "+maxmemory 8gb" in log_text
    assert SECRET not in log_text and "An0ther-S3cret" not in log_text
    assert SECRET not in result.manifest.to_json().decode()


def test_mask_secrets_covers_the_config_dialects() -> None:
    text = (
        "requirepass hunter2\n"
        "password: hunter2\n"
        'JAVA_OPTS="-Djavax.net.ssl.keyStorePassword=hunter2 -Xmx8g"\n'
        "api_token = 'hunter2'\n"
        "        - name: DB_PASSWORD\n"
        "          value: hunter2\n"
        "maxmemory-policy allkeys-lru\n"
        "keepalive 32;\n"
    )
    masked = mask_secrets(text)
    assert "hunter2" not in masked
    assert "maxmemory-policy allkeys-lru\n" in masked and "keepalive 32;\n" in masked and "-Xmx8g" in masked


def test_watch_announces_each_change_once(config_set) -> None:
    paths, store = config_set
    now = utc_now()
    first = detect_change(paths, store, exclude=EXCLUDE, now=now)
    assert first.changed  # nothing stored yet
    pending = detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=5))
    assert not pending.changed and "already announced" in pending.reason

    take_config_backup(paths, store, exclude=EXCLUDE)
    assert not detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=10)).changed

    os.utime(paths[3], ns=(5, 5))
    assert not detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=15)).changed

    paths[3].write_text("maxmemory 2gb\n")
    assert detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=20)).changed
    assert not detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=25)).changed
    # the backup of that change never happened: after an hour it is announced again
    assert detect_change(paths, store, exclude=EXCLUDE, now=now + timedelta(minutes=90)).changed


def test_watch_operator_skips_without_event_and_emits_with_event(config_set, tmp_path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from aiplatform_ops.operators import config_backup as op_mod

    paths, store = config_set
    policy = SimpleNamespace(config=SimpleNamespace(paths=paths, exclude=EXCLUDE, locations=SimpleNamespace(local=store.root)))
    monkeypatch.setattr(op_mod, "load_backup_policy", lambda: policy)
    events = {op_mod.CONFIG_ASSET: SimpleNamespace(extra={})}
    operator = op_mod.DetectConfigChangeOperator(task_id="detect_config_change", outlets=[op_mod.CONFIG_ASSET])

    result = operator.execute({"outlet_events": events})
    assert events[op_mod.CONFIG_ASSET].extra["content_hash"] == result["content_hash"]

    take_config_backup(paths, store, exclude=EXCLUDE)
    events[op_mod.CONFIG_ASSET].extra = {}
    with pytest.raises(AirflowSkipException, match="unchanged"):
        operator.execute({"outlet_events": events})
    assert events[op_mod.CONFIG_ASSET].extra == {}


def test_a_skipped_task_emits_no_asset_event_in_this_airflow() -> None:
    """The watch relies on it: Airflow's task runner sends outlet events only on success."""
    import inspect

    from airflow.sdk.execution_time import task_runner

    source = inspect.getsource(task_runner)
    start = source.index("except AirflowSkipException as e:")
    skip_branch = source[start:source.index("except AirflowRescheduleException", start)]
    assert "outlet_events" not in skip_branch and "TaskInstanceState.SKIPPED" in skip_branch
    assert "outlet_events" in inspect.getsource(task_runner._handle_current_task_success)


def test_a_version_restores_with_contents_and_modes(config_set, tmp_path) -> None:
    paths, store = config_set
    (paths[0] / "aiplatform-upstreams.conf").chmod(0o640)
    version = take_config_backup(paths, store, exclude=EXCLUDE).manifest
    (paths[0] / "aiplatform-upstreams.conf").write_text("broken {\n")

    target = tmp_path / "restored-nginx"
    restore_config_version(store.backup_dir(version.backup_id), version, target, path=paths[0])
    restored = target / "aiplatform-upstreams.conf"
    assert restored.read_bytes() == (REPO / "include/nginx/aiplatform-upstreams.conf").read_bytes()
    assert restored.stat().st_mode & 0o777 == 0o640
    assert not (target / "editor-backup.conf.swp").exists()
