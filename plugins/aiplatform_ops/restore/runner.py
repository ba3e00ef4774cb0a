"""The destructive part of a restore (manual §2.2.1), and its rollback.

In order: stop the services → safety snapshot of what will be overwritten (database: a full
backup of the target schemas into ``<work>/<run>/snapshot/database``; files and config: each
target folder or file renamed aside, ``.<name>.pre-restore-<run>`` in the same folder) → restore
the database (drop, parallel load of the full backup, checked against its manifest's row counts,
then one binary log replay per database up to the point in time) → files → config → start the
services → verify. Any failure from the stop on rolls back: the services are stopped if they had
been started again, the snapshot is put back, the services that ran before are started, and
:class:`RestoreFailed` says what failed and in which state things are.

Every step is recorded in ``<work>/<run>/state.json`` as it happens, so a rollback can run in
another process (the DAG's rollback task after a failed verification) and a rolled-back run can be
rolled back again without harm. Each destructive action writes one ``AUDIT`` line to the
``aiplatform_ops.audit`` logger. The backups' locks are held throughout: no backup of a component
runs while it is restored, and no second restore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiplatform_ops.backup.database import DatabaseBackupSettings, mark_chain_broken, take_full_backup
from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.restore.database import (
    RestoreError,
    binlog_segments,
    database_exists,
    drop_database,
    load_full_backup,
    may_skip_binlog,
    replay_binlogs,
    table_row_counts,
)
from aiplatform_ops.restore.plan import ComponentStores, RestorePlan, safe_run_name, verify_folder
from aiplatform_ops.storage.local import LocalStore, write_durably
from aiplatform_ops.storage.manifest import BackupManifest, iso, utc_now

log = logging.getLogger(__name__)
audit_log = logging.getLogger("aiplatform_ops.audit")

STATE = "state.json"


class RestoreFailed(RuntimeError):
    """The restore failed; the message says which step, why, and the state things were left in."""

    def __init__(self, message: str, state: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.state = dict(state)


@dataclass
class RestoreEnvironment:
    """The live things a restore acts on. ``inventory``/``clients`` may be ``None`` (no services)."""

    stores: Mapping[str, ComponentStores]
    mysql: MySQLTarget | None = None
    inventory: Any = None
    clients: Any = None


def audit(run: str, step: str, action: str, target: str, outcome: str, detail: str = "") -> None:
    audit_log.info("AUDIT restore run=%s step=%s action=%s target=%r outcome=%s detail=%r",
                   run, step, action, target, outcome, detail)


def run_dir(plan: RestorePlan, run_id: str) -> Path:
    return Path(plan.work_dir) / safe_run_name(run_id)


def read_state(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.exists() else None


def _save(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_durably(folder / STATE, json.dumps(state, indent=2, sort_keys=True).encode())


def _aside_name(path: Path, run: str) -> Path:
    return path.parent / f".{path.name}.pre-restore-{run}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


# --- the steps ------------------------------------------------------------------------------

def _snapshot(plan: RestorePlan, env: RestoreEnvironment, folder: Path, state: dict[str, Any], run: str) -> None:
    snap = state["snapshot"]
    if "database" in plan.components:
        targets = list(plan.components["database"].details["database_map"].values())
        present = [db for db in targets if database_exists(env.mysql, db)]
        snap["databases"] = {"present": present, "absent": [db for db in targets if db not in present]}
        if present:
            store = LocalStore(folder / "snapshot" / "database")
            manifest = take_full_backup(env.mysql, store, DatabaseBackupSettings(tuple(present)),
                                        reason=f"safety snapshot before restore {run}")
            snap["databases"].update(store=str(store.root), backup_id=manifest.backup_id)
            audit(run, "snapshot", "dump", ",".join(present), "done", f"{store.root}/{manifest.backup_id}")
        _save(folder, state)
    for component in ("files", "config"):
        if component not in plan.components:
            continue
        moved = snap.setdefault("moved", [])
        for target in plan.components[component].targets:
            path = Path(target)
            aside = _aside_name(path, run)
            entry = {"component": component, "path": str(path), "aside": str(aside) if os.path.lexists(path) else None}
            if entry["aside"]:
                if os.path.lexists(aside):
                    _remove(aside)
                os.rename(path, aside)
                audit(run, "snapshot", "move aside", str(path), "done", str(aside))
            moved.append(entry)
            _save(folder, state)


def _restore_database(plan: RestorePlan, env: RestoreEnvironment, state: dict[str, Any], run: str) -> dict[str, Any]:
    comp = plan.components["database"]
    d = comp.details
    manifests = [_manifest(f) for f in comp.folders]
    full, incrementals = manifests[0], manifests[1:]
    scratch = plan.target == "scratch"
    skip_binlog = scratch and may_skip_binlog(env.mysql)
    source_map = {s: t for s, t in d["database_map"].items() if s != t}
    for target in d["database_map"].values():
        drop_database(env.mysql, target)
        audit(run, "database", "drop", target, "done")
    load_full_backup(env.mysql, Path(comp.folders[0]), full, database_map=source_map, threads=d["threads"],
                     skip_binlog=skip_binlog)
    audit(run, "database", "load", ",".join(d["database_map"].values()), "done", f"full backup {full.backup_id}")
    problems = []
    for source, target in d["database_map"].items():
        counts = table_row_counts(env.mysql, target)
        for name, rows in full.details.get("tables", {}).items():
            db, table = name.split(".", 1)
            if db == source and counts.get(table) != rows:
                problems.append(f"{target}.{table}: {counts.get(table)} rows, the backup's manifest says {rows}")
    if problems:
        raise RestoreError("the loaded full backup does not match its manifest: " + "; ".join(problems[:10]))
    if incrementals:
        segments = binlog_segments([(Path(f), m) for f, m in zip(comp.folders[1:], incrementals, strict=True)])
        for source, target in d["database_map"].items():
            replay_binlogs(env.mysql, segments, databases=[source],
                           database_map={source: target} if source != target else None,
                           stop_datetime=d["stop_datetime"], skip_binlog=skip_binlog)
        audit(run, "database", "replay", ",".join(d["database_map"].values()), "done",
              f"{len(segments)} binary logs up to {d['stop_datetime'] or 'the end'}")
    if plan.target == "live":
        mark_chain_broken(env.stores["database"].local, d["chain_id"],
                          f"the database was restored from {comp.backup_ids[-1]} by run {run}; the next backup "
                          "starts a new chain")
    return {"replayed": bool(incrementals), "binlog_skipped": skip_binlog,
            "rows": {t: table_row_counts(env.mysql, t) for t in d["database_map"].values()}}


def _manifest(folder: str) -> BackupManifest:
    path = Path(folder) / "manifest.json"
    return BackupManifest.from_json(path.read_bytes(), str(path))


def _restore_files(plan: RestorePlan, state: dict[str, Any], run: str) -> None:
    from aiplatform_ops.restore.extract import restore_file_backup

    comp = plan.components["files"]
    folder, manifest = Path(comp.folders[-1]), _manifest(comp.folders[-1])
    if plan.target == "live":
        for root in comp.details["roots"]:
            restore_file_backup(folder, manifest, Path(root), root=root)
            audit(run, "files", "extract", root, "done", manifest.backup_id)
    else:
        restore_file_backup(folder, manifest, Path(comp.targets[0]))
        audit(run, "files", "extract", comp.targets[0], "done", manifest.backup_id)


def _restore_config(plan: RestorePlan, state: dict[str, Any], run: str) -> None:
    from aiplatform_ops.backup.config_set import restore_config_version

    comp = plan.components["config"]
    folder, manifest = Path(comp.folders[-1]), _manifest(comp.folders[-1])
    if plan.target == "scratch":
        restore_config_version(folder, manifest, Path(comp.targets[0]))
        audit(run, "config", "extract", comp.targets[0], "done", manifest.backup_id)
        return
    for target in comp.details["paths"]:
        path = Path(target)
        work = path.parent / f".{path.name}.restore-{run}"
        if os.path.lexists(work):
            _remove(work)
        restore_config_version(folder, manifest, work)
        try:
            os.rename(work / target.lstrip("/"), path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        audit(run, "config", "extract", target, "done", manifest.backup_id)


# --- orchestration --------------------------------------------------------------------------

def execute_restore(
    plan: RestorePlan,
    env: RestoreEnvironment,
    run_id: str,
    *,
    verify: Callable[[RestorePlan], None] | None = None,
    after_step: Callable[[str], None] | None = None,
    keep_snapshot: bool = False,
) -> dict[str, Any]:
    """Stop, snapshot, restore, start, verify; roll back on any failure. Returns the state (JSON-ready).

    ``after_step(name)`` is called after each step (a test uses it to inject a failure);
    ``verify(plan)`` raises when the restored system is not right. With ``keep_snapshot`` the
    snapshot stays for a later rollback (the DAG verifies in later tasks, then calls
    :func:`discard_snapshot`).
    """
    if plan.dry_run:
        raise RestoreError("this plan is a dry run; make a new plan with dry_run off to restore")
    run = safe_run_name(run_id)
    folder = run_dir(plan, run_id)
    previous = read_state(folder)
    if previous and previous.get("status") in ("restored", "finished"):
        log.info("run %s already restored (%s): nothing to do", run, previous["status"])
        return previous
    state: dict[str, Any] = {
        "run": run, "status": "running", "started_at": iso(utc_now()), "target": plan.target,
        "components": list(plan.components), "steps": [], "seconds": {}, "snapshot": {}, "stop_record": None,
        "services_started": False, "failed_step": None, "error": None, "rollback": None,
    }
    _save(folder, state)
    step = "check"
    with contextlib.ExitStack() as locks:
        try:
            for component in plan.components:
                locks.enter_context(env.stores[component].local.lock(f"restore {run}"))
            for comp in plan.components.values():
                for f in comp.folders:
                    verify_folder(Path(f), _manifest(f))
            steps: list[tuple[str, Callable[[], Any]]] = [("stop_services", lambda: _stop(plan, env, state, run))]
            steps.append(("snapshot", lambda: _snapshot(plan, env, folder, state, run)))
            if "database" in plan.components:
                steps.append(("database", lambda: state.__setitem__("database", _restore_database(plan, env, state, run))))
            if "files" in plan.components:
                steps.append(("files", lambda: _restore_files(plan, state, run)))
            if "config" in plan.components:
                steps.append(("config", lambda: _restore_config(plan, state, run)))
            steps.append(("start_services", lambda: _start(plan, env, state, run)))
            if verify is not None:
                steps.append(("verify", lambda: verify(plan)))
            for step, action in steps:
                started = time.monotonic()
                log.info("restore step %s ...", step)
                action()
                state["seconds"][step] = round(time.monotonic() - started, 3)
                state["steps"].append(step)
                _save(folder, state)
                if after_step is not None:
                    after_step(step)
        except Exception as exc:
            state.update(failed_step=step, error=f"{type(exc).__name__}: {exc}")
            _save(folder, state)
            if step == "check":
                state["status"] = "not started"
                _save(folder, state)
                raise RestoreFailed(f"restore did not start: {exc}. Nothing was stopped or changed.", state) from exc
            message = rollback_restore(plan, env, run_id, state=state, locked=True)
            raise RestoreFailed(f"restore failed at step '{step}': {exc}. {message}", state) from exc
    state["status"] = "restored"
    state["finished_at"] = iso(utc_now())
    _save(folder, state)
    if not keep_snapshot:
        discard_snapshot(plan, run_id)
        state = read_state(folder) or state
    return state


def _stop(plan: RestorePlan, env: RestoreEnvironment, state: dict[str, Any], run: str) -> None:
    if not plan.services or env.inventory is None:
        return
    from aiplatform_ops.services.control import ServiceOperationFailed, stop_services

    try:
        record = stop_services(env.inventory, env.clients, plan.services)
    except ServiceOperationFailed as exc:
        state["stop_record"] = exc.record.to_dict()
        raise
    state["stop_record"] = record.to_dict()


def _start(plan: RestorePlan, env: RestoreEnvironment, state: dict[str, Any], run: str) -> None:
    if not plan.services or env.inventory is None:
        return
    from aiplatform_ops.services.control import start_services

    state["services_started"] = True
    start_services(env.inventory, env.clients, plan.services, previous=state["stop_record"])


def rollback_restore(plan: RestorePlan, env: RestoreEnvironment, run_id: str,
                     state: dict[str, Any] | None = None, *, locked: bool = False) -> str:
    """Put the safety snapshot back and start the services that ran; returns what was done.

    Safe to call again: what was already put back is skipped. Raises nothing; a rollback that
    fails says so in its message and in the state (status ``rollback failed``). ``locked``: the
    caller already holds the backups' locks (the restore rolling itself back).
    """
    run = safe_run_name(run_id)
    folder = run_dir(plan, run_id)
    state = state if state is not None else read_state(folder)
    if not state or state.get("status") in ("rolled back", "not started", "finished"):
        return f"nothing to roll back (state: {state.get('status') if state else 'no restore recorded'})"
    done: list[str] = []
    problems: list[str] = []
    snap = state.get("snapshot", {})
    try:
        with contextlib.ExitStack() as locks:
            for component in plan.components if not locked else ():
                locks.enter_context(env.stores[component].local.lock(f"rollback {run}"))
            if state.get("services_started") and plan.services and env.inventory is not None:
                from aiplatform_ops.services.control import stop_services

                stop_services(env.inventory, env.clients, plan.services)
                done.append("services stopped again")
                state["services_started"] = False
            dbs = snap.get("databases")
            if dbs and "database" in state.get("steps", []) + [state.get("failed_step")]:
                _rollback_database(env, dbs, run)
                done.append(f"databases {', '.join(dbs['present'] + dbs['absent'])} back to their state before the restore")
            for entry in reversed(snap.get("moved", [])):
                path = Path(entry["path"])
                aside = Path(entry["aside"]) if entry["aside"] else None
                if aside is not None and not os.path.lexists(aside):
                    continue  # already put back
                if os.path.lexists(path):
                    _remove(path)
                if aside is not None:
                    os.rename(aside, path)
                audit(run, "rollback", "put back", str(path), "done", str(aside) if aside else "removed")
                done.append(f"{entry['component']} {path} put back")
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    try:
        if plan.services and env.inventory is not None and state.get("stop_record"):
            from aiplatform_ops.services.control import start_services

            start_services(env.inventory, env.clients, plan.services, previous=state["stop_record"])
            done.append("services that ran before started again")
    except Exception as exc:
        problems.append(f"starting services: {exc}")
    if problems:
        state["status"] = "rollback failed"
        message = (f"ROLLBACK FAILED: {'; '.join(problems)}. Done so far: {'; '.join(done) or 'nothing'}. "
                   f"The safety snapshot is kept in {folder / 'snapshot'} and beside each target "
                   "(.<name>.pre-restore-*): put it back by hand.")
    else:
        state["status"] = "rolled back"
        message = "Rolled back: " + ("; ".join(done) if done else "nothing had been changed yet") + "."
    state["rollback"] = message
    _save(folder, state)
    audit(run, "rollback", "finish", plan.target_name, state["status"], message)
    log.warning("%s", message)
    return message


def _rollback_database(env: RestoreEnvironment, dbs: Mapping[str, Any], run: str) -> None:
    for name in dbs["present"] + dbs["absent"]:
        drop_database(env.mysql, name)
        audit(run, "rollback", "drop", name, "done")
    if dbs.get("backup_id"):
        store = LocalStore(Path(dbs["store"]))
        manifest = store.read_manifest(dbs["backup_id"])
        load_full_backup(env.mysql, store.backup_dir(manifest.backup_id), manifest)
        audit(run, "rollback", "load", ",".join(dbs["present"]), "done", f"snapshot {manifest.backup_id}")


def discard_snapshot(plan: RestorePlan, run_id: str) -> None:
    """After a verified restore: remove the moved-aside copies and the snapshot dump."""
    folder = run_dir(plan, run_id)
    state = read_state(folder)
    if not state:
        return
    for entry in state.get("snapshot", {}).get("moved", []):
        if entry.get("aside") and os.path.lexists(entry["aside"]):
            _remove(Path(entry["aside"]))
    shutil.rmtree(folder / "snapshot", ignore_errors=True)
    shutil.rmtree(folder / "fetched", ignore_errors=True)
    state["status"] = "finished"
    _save(folder, state)
