"""What a restore will do, decided and proved before anything is stopped (manual §2.2.1).

``resolve_plan`` turns a request (the trigger form) into a :class:`RestorePlan`: for each chosen
component the backups to restore (``latest`` or an id; for the database the chain, and for a
point in time the newest full backup before it plus the incrementals up to it), each read from
the local copy or, when that is missing or damaged, from S3, every file's sha256 checked; the
targets, checked to exist; the services to stop; the confirmation the operator must type.
Every bad input is a :class:`RestoreInputError` raised here, while nothing has been touched.

Point-in-time coverage of a chain: from the moment its full backup finished (rounded up to the
next second: binary log events carry whole seconds) to the moment its newest incremental started
(that incremental flushed and archived every binary log written before it). Replay stops before
the first event of the point's second.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.restore.database import RestoreError, check_identifier, database_exists
from aiplatform_ops.storage.base import BackupStore
from aiplatform_ops.storage.local import LocalStore, LocationBusyError
from aiplatform_ops.storage.manifest import BackupManifest, ManifestError, check_backup_id, iso, sha256_file, utc_now
from aiplatform_ops.storage.replicate import VerificationError, fetch_backup
from aiplatform_ops.storage.retention import chains

COMPONENTS = ("database", "files", "config")
TARGETS = ("live", "scratch")
LATEST = "latest"
KIND = {"database": "database", "files": "files", "config": "config"}

log = logging.getLogger(__name__)


class RestoreInputError(ValueError):
    """The request cannot be carried out as asked; nothing was stopped or changed."""


@dataclass
class ComponentStores:
    """Where one kind of backup is kept: the local folder first, then S3."""

    local: LocalStore
    remote: BackupStore | None = None

    def all(self) -> list[BackupStore]:
        return [self.local] + ([self.remote] if self.remote is not None else [])


@dataclass(frozen=True)
class RestoreRequest:
    """The trigger form, checked for shape (not yet against the backups)."""

    components: tuple[str, ...]
    backups: dict[str, str]
    point_in_time: datetime | None
    target: str
    scratch_database: str | None
    scratch_folder: str | None
    dry_run: bool
    confirm: str
    triggered_by: str = "unknown"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], triggered_by: str = "unknown") -> RestoreRequest:
        components = params.get("components") or []
        if isinstance(components, str):
            components = [c.strip() for c in components.split(",") if c.strip()]
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown or not components:
            raise RestoreInputError(f"components must be a non-empty subset of {', '.join(COMPONENTS)}, got {components!r}")
        ordered = tuple(c for c in COMPONENTS if c in components)
        backups = {}
        for component in ordered:
            value = str(params.get(f"{component}_backup") or LATEST).strip()
            if value != LATEST:
                try:
                    check_backup_id(value)
                except ManifestError:
                    raise RestoreInputError(
                        f"{component}_backup: {value!r} is neither 'latest' nor a backup id such as 20261128T020000Z-full"
                    ) from None
            backups[component] = value
        target = params.get("target") or "live"
        if target not in TARGETS:
            raise RestoreInputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        pit = parse_point_in_time(params.get("point_in_time"))
        if pit is not None and "database" not in ordered:
            raise RestoreInputError("point_in_time applies to the database only; choose the database component")
        dry_run = params.get("dry_run", True)
        if isinstance(dry_run, str):
            dry_run = dry_run.strip().lower() not in ("false", "0", "no", "off")
        return cls(
            components=ordered, backups=backups, point_in_time=pit, target=target,
            scratch_database=(params.get("scratch_database") or None), scratch_folder=(params.get("scratch_folder") or None),
            dry_run=bool(dry_run), confirm=str(params.get("confirm") or "").strip(), triggered_by=triggered_by,
        )


def parse_point_in_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``2026-11-28T03:15:00Z``); without a zone it is taken as UTC."""
    if value in (None, "", "None"):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace(" ", "T"))
        except ValueError:
            raise RestoreInputError(f"point_in_time {value!r} is not an ISO 8601 date and time (2026-11-28T03:15:00Z)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _ceil_second(ts: datetime) -> datetime:
    return ts.replace(microsecond=0) + timedelta(seconds=1) if ts.microsecond else ts


def _text(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class ComponentPlan:
    """One component: which backups in which order, read from where, restored to where."""

    component: str
    backup_ids: list[str]
    folders: list[str]
    read_from: list[str]
    targets: list[str]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestorePlan:
    """Everything the destructive steps need, JSON-ready (XCom); no credentials."""

    components: dict[str, ComponentPlan]
    target: str
    target_name: str
    dry_run: bool
    point_in_time: str | None
    services: list[str]
    triggered_by: str
    created_at: str
    work_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestorePlan:
        values = dict(data)
        values["components"] = {k: ComponentPlan(**v) for k, v in values["components"].items()}
        return cls(**values)

    def describe(self) -> str:
        """The plan as the operator reads it in the task log."""
        lines = [f"RESTORE PLAN ({'dry run: nothing will be changed' if self.dry_run else 'WILL CHANGE THE TARGET'})",
                 f"  target: {self.target} ({self.target_name}); requested by {self.triggered_by}"]
        if self.point_in_time:
            lines.append(f"  point in time: {self.point_in_time}")
        idle = "none (a scratch target touches no service)" if self.target == "scratch" else "none in the inventory"
        lines.append("  1. stop services: " + (", ".join(self.services) if self.services else idle))
        lines.append("  2. safety snapshot of: " + "; ".join(t for c in self.components.values() for t in c.targets))
        step = 3
        for name, comp in self.components.items():
            lines.append(f"  {step}. restore {name} into {', '.join(comp.targets)}")
            for backup_id, folder, where in zip(comp.backup_ids, comp.folders, comp.read_from, strict=True):
                lines.append(f"       {backup_id}  from {where}  ({folder}, every file's sha256 checked)")
            if name == "database":
                d = comp.details
                lines.append(f"       full load of {d['full_backup']}, {d['tables']} tables, {d['threads']} clients")
                if d["binlogs"]:
                    stop = f"up to {d['stop_datetime']} UTC (exclusive)" if d["stop_datetime"] else "to the end"
                    lines.append(f"       then one mariadb-binlog | mariadb replay of {', '.join(d['binlogs'])} "
                                 f"from {d['start']}, {stop}")
            step += 1
        lines.append(f"  {step}. start services: " + (", ".join(reversed(self.services)) if self.services else "none"))
        lines.append(f"  {step + 1}. verify; on any failure from step 1 on, roll back to the snapshot and start services")
        if self.dry_run:
            lines.append(f"To run it, trigger again with dry_run off and confirm = {self.target_name!r}.")
        return "\n".join(lines)


# --- backups --------------------------------------------------------------------------------

def _all_manifests(stores: ComponentStores, kind: str) -> dict[str, BackupManifest]:
    """Every complete backup of ``kind`` in any location (a local manifest wins)."""
    found: dict[str, BackupManifest] = {}
    for store in reversed(stores.all()):
        try:
            for manifest in store.list_backups():
                if manifest.kind == kind:
                    found[manifest.backup_id] = manifest
        except Exception as exc:  # noqa: BLE001 - a location that cannot be listed is reported, not fatal
            log.warning("cannot list the backups in %s: %s", store.url, exc)
    return found


def _unknown(component: str, backup_id: str, manifests: dict[str, BackupManifest], stores: ComponentStores) -> RestoreInputError:
    newest = sorted(manifests)[-5:]
    where = " and ".join(s.url for s in stores.all())
    listing = ", ".join(newest) if newest else "none"
    return RestoreInputError(f"unknown {component} backup {backup_id!r}: not in {where}. Newest available: {listing}")


def _covered_until(chain: list[BackupManifest]) -> datetime | None:
    incrementals = [m for m in chain if m.type == "incremental"]
    return incrementals[-1].started if incrementals else None


def _chain_of(member: BackupManifest, grouped: dict[str, list[BackupManifest]]) -> list[BackupManifest]:
    chain = grouped.get(member.chain_id or member.backup_id, [])
    if not chain or chain[0].type != "full":
        raise RestoreInputError(f"backup {member.backup_id} belongs to chain {member.chain_id} whose full backup "
                                "is in no location: it cannot be restored")
    members = chain[: [m.backup_id for m in chain].index(member.backup_id) + 1]
    for parent, child in zip(members, members[1:], strict=False):
        if child.parent_id != parent.backup_id:
            raise RestoreInputError(f"chain {chain[0].backup_id} is broken: {child.backup_id} builds on "
                                    f"{child.parent_id}, which is in no location")
    return members


def choose_database_chain(manifests: dict[str, BackupManifest], wanted: str,
                          point: datetime | None) -> list[BackupManifest]:
    """The full backup and incrementals to restore for ``wanted`` (``latest`` or an id) and ``point``."""
    grouped = chains(manifests.values())
    complete = {cid: c for cid, c in grouped.items() if c and c[0].type == "full"}
    if not complete:
        raise RestoreInputError("there is no full database backup in any location: nothing to restore")
    if wanted != LATEST:
        member = manifests[wanted]
        members = _chain_of(member, grouped)
        if point is not None:
            start, end = _ceil_second(members[0].finished), _covered_until(members)
            if end is None or not start <= point <= end:
                span = f"{_text(start)} to {_text(end)}" if end else f"only the moment of {members[0].backup_id}"
                raise RestoreInputError(f"point in time {_text(point)} is outside backup {wanted}: its binary logs "
                                        f"cover {span}. Choose 'latest' to let the plan pick the chain")
            members = _up_to(members, point)
        return members
    ordered = sorted(complete.values(), key=lambda c: (c[0].started_at, c[0].backup_id))
    if point is None:
        return ordered[-1]
    pitr = [c for c in ordered if c[0].details.get("pitr")]
    if not pitr:
        raise RestoreInputError("no database chain supports point-in-time recovery (binary logs were off)")
    oldest = _ceil_second(pitr[0][0].finished)
    if point < oldest:
        raise RestoreInputError(f"point in time {_text(point)} is before the oldest archived binary log: the "
                                f"earliest restorable point is {_text(oldest)} (full backup {pitr[0][0].backup_id})")
    before = [c for c in pitr if _ceil_second(c[0].finished) <= point]
    chain = before[-1]
    end = _covered_until(chain)
    if end is None or point > end:
        newest = max((e for c in pitr if (e := _covered_until(c))), default=None)
        later = [c for c in pitr if c[0].started > chain[0].started]
        if later:
            raise RestoreInputError(
                f"point in time {_text(point)} falls in a gap: chain {chain[0].backup_id} covers up to "
                f"{_text(end) if end else _text(oldest)}, the next full backup {later[0][0].backup_id} finished "
                f"{_text(_ceil_second(later[0][0].finished))}")
        newest_text = _text(newest) if newest else "none archived yet"
        raise RestoreInputError(f"point in time {_text(point)} is after the newest archived binary log "
                                f"({newest_text}); choose an earlier point or wait for the next binary log archive")
    return _up_to(chain, point)


def _up_to(chain: list[BackupManifest], point: datetime) -> list[BackupManifest]:
    """The full backup and the incrementals up to the first one that started at or after ``point``."""
    members = [chain[0]]
    for manifest in chain[1:]:
        members.append(manifest)
        if manifest.started >= point:
            break
    return members


def _fetch(stores: ComponentStores, backup_id: str, fetch_dir: Path) -> tuple[str, BackupManifest, str]:
    """A verified folder of one backup: the local copy, else a verified download from S3."""
    try:
        folder, manifest = fetch_backup(stores.all(), backup_id, fetch_dir / backup_id)
    except VerificationError as exc:
        raise RestoreInputError(f"backup {backup_id} is damaged in every location, it cannot be restored: {exc}") from None
    except FileNotFoundError as exc:
        raise RestoreInputError(str(exc)) from None
    where = stores.local.url if Path(folder) == stores.local.backup_dir(backup_id) else (
        stores.remote.url if stores.remote is not None else "?")
    if where != stores.local.url:
        where += " (the local copy is missing or damaged)"
        (Path(folder) / "manifest.json").write_bytes(manifest.to_json())
    return str(folder), manifest, where


def verify_folder(folder: Path, manifest: BackupManifest) -> None:
    """Check again, right before use, that every file of a fetched backup matches its manifest."""
    for entry in manifest.files:
        path = Path(folder) / entry.name
        try:
            size, digest = sha256_file(path)
        except OSError as exc:
            raise RestoreError(f"{path}: cannot be read: {exc}") from None
        if size != entry.size or digest != entry.sha256:
            raise RestoreError(f"{path}: size or sha256 differs from the manifest of {manifest.backup_id}")


# --- targets ----------------------------------------------------------------------------------

def _inside(path: Path, other: Path) -> bool:
    path, other = Path(os.path.abspath(path)), Path(os.path.abspath(other))
    return path == other or other in path.parents or path in other.parents


def _scratch_folder(request: RestoreRequest, protected: Sequence[Path]) -> Path:
    if not request.scratch_folder:
        raise RestoreInputError("target scratch needs scratch_folder for the files and config components")
    folder = Path(request.scratch_folder)
    if not folder.is_absolute():
        raise RestoreInputError(f"scratch_folder {request.scratch_folder!r} is not an absolute path")
    if not folder.parent.is_dir():
        raise RestoreInputError(f"scratch_folder {folder}: its parent folder {folder.parent} does not exist")
    for live in protected:
        if _inside(folder, live):
            raise RestoreInputError(f"scratch_folder {folder} overlaps {live}, which is live data or a backup "
                                    "location; choose a folder of its own")
    return folder


def _check_parent(path: Path, component: str) -> None:
    if not path.parent.is_dir():
        raise RestoreInputError(f"{component} target {path}: the folder {path.parent} does not exist")


def check_not_busy(stores: Mapping[str, ComponentStores], components: Sequence[str]) -> None:
    """Fail now if a backup (or another restore) holds the lock of a chosen component's backups."""
    for component in components:
        try:
            with stores[component].local.lock("restore plan check"):
                pass
        except LocationBusyError as exc:
            raise RestoreInputError(f"cannot restore {component} while a backup of it runs: {exc}") from None


def resolve_plan(
    request: RestoreRequest,
    stores: Mapping[str, ComponentStores],
    *,
    work_dir: Path,
    run_id: str,
    mysql: MySQLTarget | None = None,
    live_databases: Sequence[str] = (),
    services: Sequence[str] = (),
    threads: int = 2,
) -> RestorePlan:
    """Decide and prove the restore; raises :class:`RestoreInputError` on any bad input."""
    check_not_busy(stores, request.components)
    fetch_dir = Path(work_dir) / run_id / "fetched"
    components: dict[str, ComponentPlan] = {}
    protected = [stores[c].local.root for c in stores]
    target_names: list[str] = []
    for component in request.components:
        manifests = _all_manifests(stores[component], KIND[component])
        wanted = request.backups[component]
        if wanted != LATEST and wanted not in manifests:
            raise _unknown(component, wanted, manifests, stores[component])
        if component == "database":
            members = choose_database_chain(manifests, wanted, request.point_in_time)
        else:
            if not manifests:
                raise RestoreInputError(f"there is no {component} backup in any location: nothing to restore")
            members = [manifests[wanted] if wanted != LATEST else max(manifests.values(), key=lambda m: (m.started_at, m.backup_id))]
        fetched = [_fetch(stores[component], m.backup_id, fetch_dir) for m in members]
        plan = ComponentPlan(component, [m.backup_id for m in members], [f[0] for f in fetched], [f[2] for f in fetched], [])
        manifest = fetched[-1][1]
        if component == "database":
            _plan_database(plan, request, [f[1] for f in fetched], mysql, live_databases, threads)
            target_names.append(",".join(plan.details["database_map"].values()))
        elif component == "files":
            roots = [Path(r) for r in manifest.details.get("roots", [])]
            protected += roots
            if request.target == "live":
                for root in roots:
                    _check_parent(root, "files")
                plan.targets = [str(r) for r in roots]
            plan.details = {"roots": [str(r) for r in roots], "files": manifest.details.get("counts", {}).get("files")}
        else:
            paths = [Path(p) for p in manifest.details.get("paths", []) if p not in manifest.details.get("missing_paths", [])]
            protected += paths
            if request.target == "live":
                for path in paths:
                    _check_parent(path, "config")
                plan.targets = [str(p) for p in paths]
            plan.details = {"paths": [str(p) for p in paths]}
        components[component] = plan
    if request.target == "scratch" and ("files" in components or "config" in components):
        folder = _scratch_folder(request, protected)
        for component in ("files", "config"):
            if component in components:
                components[component].targets = [str(folder / component)]
        if "database" not in components:
            target_names.append(str(folder))
    if request.target == "live" and "database" not in components:
        target_names.append("live")
    target_name = target_names[0] if target_names else request.target
    if not request.dry_run:
        if not request.confirm:
            raise RestoreInputError(f"dry_run is off: type the target's name {target_name!r} into confirm to go ahead")
        if request.confirm != target_name:
            raise RestoreInputError(f"confirm {request.confirm!r} does not match the target's name {target_name!r}; "
                                    "nothing was changed")
    return RestorePlan(
        components=components, target=request.target, target_name=target_name, dry_run=request.dry_run,
        point_in_time=iso(request.point_in_time) if request.point_in_time else None,
        services=list(services) if request.target == "live" else [], triggered_by=request.triggered_by,
        created_at=iso(utc_now()), work_dir=str(work_dir),
    )


def _plan_database(plan: ComponentPlan, request: RestoreRequest, members: list[BackupManifest],
                   mysql: MySQLTarget | None, live_databases: Sequence[str], threads: int) -> None:
    full = members[0]
    sources = list(full.details.get("databases", []))
    if mysql is None:
        raise RestoreInputError("no database connection to restore into")
    try:
        mysql.query("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - the driver's errors differ
        raise RestoreInputError(f"the target database server {mysql.host}:{mysql.port} cannot be reached: {exc}") from None
    if request.target == "live":
        database_map = {db: db for db in sources}
        for db in sources:
            if not database_exists(mysql, db):
                raise RestoreInputError(
                    f"target database {db!r} does not exist on {mysql.host}:{mysql.port}. If it was dropped, create "
                    f"it empty (CREATE DATABASE `{db}`) and trigger again; or restore into a scratch database")
    else:
        if not request.scratch_database:
            raise RestoreInputError("target scratch needs scratch_database for the database component")
        try:
            scratch = check_identifier(request.scratch_database, "scratch_database")
        except RestoreError as exc:
            raise RestoreInputError(str(exc)) from None
        names = {db: scratch if len(sources) == 1 else f"{scratch}_{db}" for db in sources}
        clash = [n for n in names.values() if n in set(sources) | set(live_databases)]
        if clash:
            raise RestoreInputError(f"scratch_database {clash[0]!r} is a live database; a rehearsal needs a name of its own")
        database_map = names
    incrementals = members[1:]
    binlogs: list[str] = []
    for manifest in incrementals:
        for entry in manifest.files:
            if entry.meta.get("binlog") not in binlogs:
                binlogs.append(entry.meta["binlog"])
    point = request.point_in_time
    stop = point.strftime("%Y-%m-%d %H:%M:%S") if point is not None and incrementals else None
    start = full.details.get("binlog", {}).get("start") or {}
    plan.targets = [f"database {name}" for name in database_map.values()]
    plan.details = {
        "full_backup": full.backup_id,
        "databases": sources,
        "database_map": database_map,
        "tables": len(full.details.get("tables", {})),
        "expected_tables": {f"{database_map[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v
                            for k, v in full.details.get("tables", {}).items() if k.split(".", 1)[0] in database_map},
        "binlogs": binlogs,
        "start": f"{start.get('file')}:{start.get('position')}" if start else None,
        "stop_datetime": stop,
        "threads": max(1, threads),
        "chain_id": full.chain_id or full.backup_id,
        "covered_until": iso(c) if (c := _covered_until(members)) else None,
    }


def safe_run_name(run_id: str) -> str:
    """A run id as a file name (Airflow run ids hold ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:200] or "run"
