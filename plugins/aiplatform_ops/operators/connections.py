"""Airflow connections turned into the plain objects ``aiplatform_ops`` functions take.

Only operators call these, at run time: a DAG file never opens a connection while it is parsed.
"""

from __future__ import annotations

from typing import Any

from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.config import MYSQL_CONN_ID, REDIS_CONN_ID, S3_CONN_ID, Locations
from aiplatform_ops.storage.base import BackupStore
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.s3 import S3Store


def mysql_target(conn_id: str = MYSQL_CONN_ID) -> MySQLTarget:
    """The platform database from an Airflow connection (type mysql)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return MySQLTarget(
        host=conn.host or "127.0.0.1",
        port=int(conn.port or 3306),
        user=conn.login or "root",
        password=conn.password or "",
        database=conn.schema or None,
    )


def s3_client(conn_id: str = S3_CONN_ID) -> Any:
    """A boto3 S3 client from the amazon provider's hook (``endpoint_url`` in extra for MinIO)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def backup_stores(locations: Locations, sse: str | None, conn_id: str = S3_CONN_ID) -> tuple[LocalStore, S3Store | None]:
    """The local store and, when the policy names one, the S3 store of a kind of backup."""
    local = LocalStore(locations.local)
    remote = None
    if locations.s3 is not None:
        remote = S3Store(s3_client(conn_id), locations.s3.bucket, locations.s3.prefix, sse)
    return local, remote


__all__ = ["MYSQL_CONN_ID", "REDIS_CONN_ID", "S3_CONN_ID", "all_stores", "backup_stores", "mysql_target", "s3_client"]


def all_stores(local: LocalStore, remote: S3Store | None) -> list[BackupStore]:
    return [local] + ([remote] if remote is not None else [])
