"""The weekly restore drill: prove the newest backups restore, and measure how long it takes.

Each component is restored on its own into a scratch copy (the newest database chain into a
scratch database, the newest file and config backups into scratch folders) with the same code as
a real restore: every file's sha256 checked, the full backup's row counts checked against its
manifest before the binary logs are replayed, every extracted file checked against the listing.
The time each restore took is the measured recovery time. The scratch copies are dropped
afterwards, whatever happened. A component that cannot be restored fails the drill, loudly.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiplatform_ops.restore.database import drop_database
from aiplatform_ops.restore.plan import COMPONENTS, LATEST, RestoreInputError, RestoreRequest, resolve_plan
from aiplatform_ops.restore.runner import RestoreEnvironment, RestoreFailed, execute_restore
from aiplatform_ops.storage.manifest import iso, utc_now

log = logging.getLogger(__name__)


class DrillFailed(RuntimeError):
    """At least one backup could not be restored; ``result`` holds every component's outcome."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class DrillStep:
    component: str
    ok: bool
    backups: list[str] = field(default_factory=list)
    seconds: float | None = None
    detail: str = ""


def run_drill(
    env: RestoreEnvironment,
    *,
    work_dir: Path,
    run_id: str,
    scratch_database: str,
    scratch_folder: Path,
    components: Sequence[str] = COMPONENTS,
    live_databases: Sequence[str] = (),
    threads: int = 2,
) -> dict[str, Any]:
    """Restore each component's newest backup into scratch, verify, time it, drop it; raise on failure."""
    started = utc_now()
    steps: list[DrillStep] = []
    for component in components:
        request = RestoreRequest(
            components=(component,), backups={component: LATEST}, point_in_time=None, target="scratch",
            scratch_database=scratch_database, scratch_folder=str(scratch_folder), dry_run=True, confirm="",
            triggered_by="aiplatform_restore_drill",
        )
        step = DrillStep(component, ok=False)
        try:
            _drop_scratch(env, component, scratch_database, scratch_folder, live_databases)
            plan = resolve_plan(request, env.stores, work_dir=work_dir, run_id=f"{run_id}-{component}",
                                mysql=env.mysql, live_databases=live_databases, threads=threads)
            plan.dry_run = False  # a drill only ever writes scratch copies
            step.backups = plan.components[component].backup_ids
            clock = time.monotonic()
            execute_restore(plan, env, f"{run_id}-{component}")
            step.seconds = round(time.monotonic() - clock, 3)
            step.ok = True
            step.detail = f"restored {len(step.backups)} backup(s) into {', '.join(plan.components[component].targets)}, verified"
        except (RestoreInputError, RestoreFailed, Exception) as exc:  # noqa: BLE001 - every failure is reported
            step.detail = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                _drop_scratch(env, component, scratch_database, scratch_folder, live_databases)
            except Exception as exc:  # noqa: BLE001
                step.detail += f" (scratch copy not dropped: {exc})"
        log.info("drill %s: %s in %s s: %s", component, "OK" if step.ok else "FAILED", step.seconds, step.detail)
        steps.append(step)
    failed = [s for s in steps if not s.ok]
    result = {
        "run_id": run_id, "started_at": iso(started), "finished_at": iso(utc_now()),
        "result": "failed" if failed else "passed",
        "recovery_seconds": {s.component: s.seconds for s in steps},
        "steps": [asdict(s) for s in steps],
    }
    if failed:
        raise DrillFailed("restore drill FAILED: " + "; ".join(f"{s.component}: {s.detail}" for s in failed), result)
    return result


def _drop_scratch(env: RestoreEnvironment, component: str, scratch_database: str, scratch_folder: Path,
                  live_databases: Sequence[str] = ()) -> None:
    if component == "database" and env.mysql is not None:
        for name in [scratch_database, *(f"{scratch_database}_{db}" for db in live_databases)]:
            drop_database(env.mysql, name)
    elif component in ("files", "config"):
        shutil.rmtree(Path(scratch_folder) / component, ignore_errors=True)
