"""The verification report: a JSON file kept with the run's history and a table for the task log.

The verdict is simple on purpose: any failed check fails the verification. Skipped checks (a
group not chosen, too few cache lookups to judge) are listed so nobody mistakes them for passes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiplatform_ops.verify.checks import FAILED, PASSED, SKIPPED, CheckResult

REPORT_FORMAT = 1


class VerificationFailed(RuntimeError):
    """At least one check failed; the message lists them."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class VerificationReport:
    started_at: str
    finished_at: str
    results: list[CheckResult]
    context: dict[str, Any] = field(default_factory=dict)
    format: int = REPORT_FORMAT

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def status(self) -> str:
        return FAILED if self.failed else PASSED

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in (PASSED, FAILED, SKIPPED)}

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "counts": self.counts(), **asdict(self)}


def build_report(
    results: Iterable[CheckResult | Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    started_at: str | None = None,
) -> VerificationReport:
    """A report from check results (objects, or dicts as they come back from XCom)."""
    items = [r if isinstance(r, CheckResult) else CheckResult(**r) for r in results]
    return VerificationReport(started_at or _now(), _now(), items, dict(context or {}))


def write_report(report: VerificationReport, folder: str | Path, name: str | None = None) -> Path:
    """Write ``verify-<time>.json`` into ``folder`` atomically (a reader never sees half a report)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report.finished_at.replace("-", "").replace(":", "")
    target = folder / (name or f"verify-{stamp}.json")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".verify-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=2, default=str)
            out.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def render_table(report: VerificationReport) -> str:
    """A fixed-width table: one line per check, failures marked, then the verdict."""
    rows = [(r.group, r.status.upper(), r.name, r.detail) for r in report.results]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(("GROUP", "STATUS", "CHECK"))]
    widths = [min(w, 60) for w in widths]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c[: widths[i]].ljust(widths[i]) for i, c in enumerate(cells[:3])) + "  " + cells[3]

    counts = report.counts()
    out = [line(("GROUP", "STATUS", "CHECK", "DETAIL")), line(tuple("-" * w for w in widths) + ("-" * 6,))]
    out += [line(row) for row in rows]
    out.append(f"verification {report.status.upper()}: {counts[PASSED]} passed, {counts[FAILED]} failed, "
               f"{counts[SKIPPED]} skipped")
    return "\n".join(out)


def raise_if_failed(report: VerificationReport) -> None:
    if report.failed:
        listed = "; ".join(f"[{r.group}] {r.name}: {r.detail}" for r in report.failed)
        raise VerificationFailed(f"{len(report.failed)} of {len(report.results)} checks failed: {listed}")
