"""Shared fixtures: real services on loopback, started per test session in temporary folders.

Airflow runs with a throwaway home and SQLite metadata so tests never touch a user's setup.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="aiplatform-ops-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
for path in (REPO / "plugins", REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import sandbox  # noqa: E402  (scripts/sandbox.py, after sys.path is set)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench", action="store_true", help="run the benchmarks in tests/bench")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if "bench" in collection_path.parts and not config.getoption("--bench"):
        return True
    return None


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="aiplatform-ops-services-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def mariadb(services_dir: Path) -> Iterator[sandbox.Service]:
    """A MariaDB server with binary logs, own datadir and port."""
    service = sandbox.start_mariadb(services_dir / "mariadb")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def s3_endpoint(services_dir: Path) -> Iterator[sandbox.Service]:
    service = sandbox.start_s3(services_dir / "s3")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[sandbox.Service]:
    service = sandbox.start_redis(services_dir / "redis")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def airflow_metadata() -> str:
    """A migrated SQLite metadata database in the session's throwaway AIRFLOW_HOME (for dag.test())."""
    import subprocess

    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
