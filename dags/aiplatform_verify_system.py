"""
### Verify the AI platform (manual §2.2.2)

Run after a restore, a failover or any repair, or whenever you doubt the platform is whole.

1. **service_status**: every service in `include/config/services.yaml` answers its health checks.
2. **data_integrity**: orphan rows (e.g. `ai_dataset_file.dataset_id` without an `ai_dataset`);
   with an expectations file also row counts / table checksums and file sha256 sums.
3. **core_functions**: the smoke checks of `verify.yaml` (read-only SQL that must return rows,
   HTTP calls that must answer).
4. **metrics**: MySQL `Threads_connected`, Redis hit rate, free disk against `thresholds.yaml`.

The `report` task writes `verify-<time>.json` (to `report_dir`, default from `verify.yaml`),
prints a table of every check in its log, and fails the run if any check failed. Group tasks
stay green when their checks fail: read the `report` log for the verdict.

Expectations file (JSON or YAML), e.g. written from a backup manifest:
`{"tables": {"aiplatform.ai_dataset": 1200}, "files": [{"path": "a.bin", "size": 3, "sha256": "..."}],
"files_root": "/app/aiplatform/data"}`.

Read-only: this DAG changes nothing on the platform.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag

from aiplatform_ops.operators.defaults import default_args
from aiplatform_ops.operators.verify import verify_system_group
from aiplatform_ops.verify.checks import GROUPS


@dag(
    dag_id="aiplatform_verify_system",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["aiplatform", "verify", "restore"],
    default_args=default_args(retries=1),
    params={
        "checks": Param(
            list(GROUPS),
            type="array",
            items={"type": "string", "enum": list(GROUPS)},
            examples=list(GROUPS),
            title="Check groups",
            description="Which parts of the verification to run (manual §2.2.2).",
        ),
        "expectations_path": Param(
            None,
            type=["null", "string"],
            title="Expectations file",
            description="Optional JSON/YAML file with expected row counts and file checksums, e.g. from a backup manifest.",
        ),
        "services": Param(
            [],
            type=["null", "array"],
            items={"type": "string"},
            title="Services",
            description="Limit the service status checks to these services (empty: all in the inventory).",
        ),
        "report_dir": Param(
            None,
            type=["null", "string"],
            title="Report folder",
            description="Where to write the JSON report (empty: report_dir of verify.yaml).",
        ),
    },
)
def aiplatform_verify_system() -> None:
    verify_system_group(
        groups="{{ params.checks }}",
        expectations="{{ params.expectations_path }}",
        services="{{ params.services }}",
        report_dir="{{ params.report_dir }}",
    )


aiplatform_verify_system()
