"""Fixtures shared by the integration tests (defined in their own modules, registered here)."""

from db_fixtures import db_store, platform_db  # noqa: F401
