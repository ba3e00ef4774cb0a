"""Retention: which backups may go, chain-aware, with a dry run and an audit line per deletion.

A database chain (a full backup and the incrementals built on it) expires whole: an incremental
is useless without its base, and a base is never deleted while a kept incremental needs it.
The newest complete chain is always kept, whatever its age, so retention can never leave a
location empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiplatform_ops.storage.base import BackupStore
from aiplatform_ops.storage.manifest import BackupManifest

log = logging.getLogger(__name__)


@dataclass
class RetentionPlan:
    """What retention keeps and deletes in one location, and why."""

    location: str
    keep: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def chains(manifests: Iterable[BackupManifest]) -> dict[str, list[BackupManifest]]:
    """Group backups by chain (a full backup is its own chain's id), oldest first."""
    grouped: dict[str, list[BackupManifest]] = {}
    for manifest in sorted(manifests, key=lambda m: (m.started_at, m.backup_id)):
        grouped.setdefault(manifest.chain_id or manifest.backup_id, []).append(manifest)
    return grouped


def plan_by_age(location: str, manifests: list[BackupManifest], keep_days: int, now: datetime) -> RetentionPlan:
    """Keep every chain that holds a backup finished within ``keep_days``, plus the newest chain.

    A chain whose newest backup is older than the cutoff goes whole. A chain that spans the
    cutoff stays whole, because restoring to a point just inside the window needs its base.
    """
    cutoff = now - timedelta(days=keep_days)
    plan = RetentionPlan(location)
    grouped = chains(manifests)
    newest_chain = max(grouped, key=lambda c: grouped[c][-1].finished_at, default=None)
    for chain_id, members in grouped.items():
        ids = [m.backup_id for m in members]
        if members[0].type != "full":
            plan.keep += ids
            for backup_id in ids:
                plan.reasons[backup_id] = f"chain {chain_id} has no full backup here; left for an operator"
            continue
        last = members[-1].finished
        if chain_id == newest_chain or last >= cutoff:
            plan.keep += ids
            why = "newest chain" if last < cutoff else f"chain has a backup within {keep_days} days"
            for backup_id in ids:
                plan.reasons[backup_id] = why
        else:
            plan.delete += ids
            for backup_id in ids:
                plan.reasons[backup_id] = f"chain {chain_id} ended {last:%Y-%m-%d %H:%M}Z, before {cutoff:%Y-%m-%d %H:%M}Z"
    return plan


def plan_by_count(location: str, manifests: list[BackupManifest], keep_versions: int) -> RetentionPlan:
    """Keep the newest ``keep_versions`` backups (each a full, self-contained version)."""
    ordered = sorted(manifests, key=lambda m: (m.started_at, m.backup_id))
    plan = RetentionPlan(location)
    split = max(len(ordered) - keep_versions, 0)
    for manifest in ordered[:split]:
        plan.delete.append(manifest.backup_id)
        plan.reasons[manifest.backup_id] = f"older than the newest {keep_versions} versions"
    for manifest in ordered[split:]:
        plan.keep.append(manifest.backup_id)
        plan.reasons[manifest.backup_id] = f"one of the newest {keep_versions} versions"
    return plan


def apply_retention(store: BackupStore, plan: RetentionPlan, *, dry_run: bool = False) -> list[str]:
    """Delete what the plan says, newest first so a chain is never left without its base."""
    for backup_id in sorted(plan.delete, reverse=True):
        verb = "would delete" if dry_run else "deleting"
        log.info("retention %s %s/%s: %s", verb, plan.location, backup_id, plan.reasons[backup_id])
        if not dry_run:
            store.delete_backup(backup_id)
    log.info("retention in %s: %d kept, %d %s", plan.location, len(plan.keep), len(plan.delete),
             "to delete (dry run)" if dry_run else "deleted")
    return sorted(plan.delete)
