"""The restore record: who restored what, from which backup, how long it took and how it ended.

One JSON file per run in the restores folder beside the database backups
(``<database local folder>/../restores/<run>.json``, e.g. ``/backup/db/restores/``), written
atomically, plus the same summary in the run's log. Drills write ``drill-<time>.json`` there and
``latest-drill.json``, the proof that the backups restore. Nothing secret goes in: names, ids,
times and messages only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiplatform_ops.restore.plan import safe_run_name
from aiplatform_ops.storage.local import write_durably

log = logging.getLogger(__name__)

RESTORES_FOLDER = "restores"


def restores_dir(database_local: Path) -> Path:
    """Where restore records, work folders and drill results live: beside the database backups."""
    return Path(database_local).parent / RESTORES_FOLDER


def build_record(
    *, run_id: str, dag_id: str | None, triggered_by: str, plan: Mapping[str, Any] | None, result: str,
    started_at: str | None, finished_at: str, seconds: float | None, message: str = "",
    state: Mapping[str, Any] | None = None, verification: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record as stored; ``result`` is one of dry run, restored, rolled back, failed, rejected."""
    components = {}
    for name, comp in ((plan or {}).get("components") or {}).items():
        components[name] = {"backups": comp["backup_ids"], "read_from": comp["read_from"], "targets": comp["targets"]}
        if name == "database":
            components[name].update({k: comp["details"].get(k) for k in ("stop_datetime", "binlogs", "database_map")})
    return {
        "run_id": run_id,
        "dag_id": dag_id,
        "triggered_by": triggered_by,
        "target": (plan or {}).get("target"),
        "target_name": (plan or {}).get("target_name"),
        "point_in_time": (plan or {}).get("point_in_time"),
        "dry_run": (plan or {}).get("dry_run"),
        "components": components,
        "services": (plan or {}).get("services"),
        "result": result,
        "message": message,
        "started_at": started_at,
        "finished_at": finished_at,
        "seconds": seconds,
        "step_seconds": (state or {}).get("seconds"),
        "failed_step": (state or {}).get("failed_step"),
        "rollback": (state or {}).get("rollback"),
        "verification": dict(verification) if verification else None,
    }


def write_record(folder: Path, run_id: str, record: Mapping[str, Any]) -> Path:
    """Store the record as ``<folder>/<run>.json`` and log its summary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_run_name(run_id)}.json"
    write_durably(path, json.dumps(record, indent=2, sort_keys=True, default=str).encode() + b"\n")
    log.info("restore record %s: %s by %s, %s, %s s%s", path, record.get("result"), record.get("triggered_by"),
             ", ".join(f"{k} from {v['backups'][-1] if v.get('backups') else '?'}"
                       for k, v in (record.get("components") or {}).items()) or "nothing chosen",
             record.get("seconds"), f": {record['message']}" if record.get("message") else "")
    return path


def write_drill_result(folder: Path, name: str, result: Mapping[str, Any]) -> Path:
    """Store a drill's result as ``drill-<name>.json`` and as ``latest-drill.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps(result, indent=2, sort_keys=True, default=str).encode() + b"\n"
    path = folder / f"drill-{safe_run_name(name)}.json"
    write_durably(path, data)
    write_durably(folder / "latest-drill.json", data)
    return path
