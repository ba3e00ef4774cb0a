"""The full stack in docker-compose.yaml, checked by parsing it (no Docker engine needed).

What an operator relies on when running `docker compose up`: the official Airflow services with one
shared configuration, the project's folders and the backup volume in every Airflow container, the
five connections parsing as what the DAGs expect, MySQL with binary logs, the S3 bucket the backup
policy names, secrets only from .env, and an image built with the pinned constraints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
POLICY_FILE = REPO / "include" / "config" / "backup_policy.yaml"

# The services of the official Airflow 3.3 docker-compose.yaml with the command each runs.
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
    "airflow-init": None,
}
PROJECT_MOUNTS = {
    "/opt/airflow/dags": "./dags",
    "/opt/airflow/plugins": "./plugins",
    "/opt/airflow/include": "./include",
}
BACKUP_ROOT = "/backup"
CONNECTIONS = {
    "aiplatform_mysql": "mysql",
    "aiplatform_s3": "aws",
    "aiplatform_redis": "redis",
    "aiplatform_k8s": "kubernetes",
    "aiplatform_ssh": "ssh",
}
# HOME is the only variable the file may take from the shell rather than from .env.
SHELL_ENV = {"HOME": "/home/operator"}

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")
# A secret is a bare reference or a required one (`${X}`, `${X:?msg}`); a default would be a literal.
_SECRET_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^${}]*)?\}")
_SECRET_KEY = re.compile(r"(PASSWORD|SECRET|_KEY|TOKEN|PWD|_AUTH)$")
_URI_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^:@/\s]*):([^@\s]*)@")
_JSON_PASSWORD = re.compile(r'"password"\s*:\s*"([^"]*)"')
_DOLLAR = "\0dollar\0"


# ----------------------------------------------------------------------------- helpers


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: `$$`, `${X}`, `${X:-d}`, `${X-d}`, `${X:?m}`, `${X?m}`, nested."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        missing = not current if op in (":-", ":?") else current is None
        if not missing:
            return current or ""
        if op in (":?", "?"):
            raise KeyError(f"required variable {name} is not set ({arg})")
        if op in (":-", "-"):
            return arg
        return ""

    text = value.replace("$$", _DOLLAR)
    while True:
        replaced = _REF.sub(one, text)
        if replaced == text:
            break
        text = replaced
    assert "${" not in text, f"unresolved reference in {value!r}"
    return text.replace(_DOLLAR, "$")


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def mapping(value: Any) -> dict[str, Any]:
    """A compose `environment`/`depends_on` as a dict, from the map or the list form."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for item in value:
        key, _, val = str(item).partition("=")
        result[key] = val
    return result


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Short-syntax volumes as {container path: source}."""
    result = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"long-syntax volume not expected here: {volume!r}"
        # The source may itself hold `${A:-${B}}`; split after interpolating it out of the way.
        source, target = _split_volume(volume)
        result[target] = source
    return result


def _split_volume(volume: str) -> tuple[str, str]:
    depth, parts, current = 0, [], ""
    for char in volume:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    assert len(parts) in (2, 3), f"unexpected volume syntax: {volume!r}"
    return parts[0], parts[1]


def walk_strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else "\n".join(str(part) for part in command)


def dockerfile_instructions(text: str) -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\s*\n", " ", "\n".join(lines))
    return [re.sub(r"\s+", " ", line).strip() for line in joined.splitlines() if line.strip()]


def policy_buckets(policy: Any) -> set[str]:
    buckets = set()
    for text in walk_strings(policy):
        if text.startswith("s3://"):
            buckets.add(text[len("s3://") :].split("/", 1)[0])
    return buckets


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return {**SHELL_ENV, **read_env_file(ENV_EXAMPLE)}


@pytest.fixture(scope="module", params=["as-in-example", "customised"])
def dotenv(request: pytest.FixtureRequest, env_example: dict[str, str]) -> dict[str, str]:
    """A .env: .env.example itself, and one where the operator changed every non-numeric value."""
    if request.param == "as-in-example":
        return env_example
    return {key: value if value.isdigit() or key in SHELL_ENV else value + "2" for key, value in env_example.items()}


@pytest.fixture(scope="module")
def common(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["x-airflow-common"]


@pytest.fixture(scope="module")
def airflow_containers(services: dict[str, dict[str, Any]], common: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every service that runs the project's Airflow image, profiles included."""
    found = {name: svc for name, svc in services.items() if svc.get("image") == common["image"]}
    assert set(AIRFLOW_SERVICES) <= set(found)
    return found


@pytest.fixture(scope="module")
def worker_env(services: dict[str, dict[str, Any]], dotenv: dict[str, str]) -> dict[str, str]:
    """The worker's environment as the container sees it, with the values of a .env."""
    env = mapping(services["airflow-worker"]["environment"])
    return {key: interpolate(str(value), dotenv) for key, value in env.items()}


# ----------------------------------------------------------------------------- Airflow services


def test_official_airflow_services_share_the_common_config(services, common):
    common_env = mapping(common["environment"])
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert common.get("build") == "."
    for name, expected_command in AIRFLOW_SERVICES.items():
        assert name in services, f"service {name} is missing"
        service = services[name]
        assert service.get("image") == common["image"], name
        assert service.get("build") == common["build"], name
        env = mapping(service.get("environment"))
        for key, value in common_env.items():
            assert env.get(key) == value, f"{name}: {key} differs from x-airflow-common"
        if expected_command is not None:
            assert service.get("command") == expected_command, name
        if name != "airflow-init":
            assert service.get("user") == common["user"], name
            assert service.get("restart") == "always", name
            assert "healthcheck" in service, name
    assert "8080:8080" in services["airflow-apiserver"].get("ports", [])


def test_metadata_database_and_broker_are_the_compose_services(services, common):
    env = mapping(common["environment"])
    assert "postgres" in services and "redis" in services
    assert re.search(r"@postgres[:/]", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert re.search(r"@postgres[:/]", env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert re.match(r"redis://([^@]*@)?redis:6379/", env["AIRFLOW__CELERY__BROKER_URL"])
    # The Celery broker is not the platform cache.
    assert services["platform-redis"] is not services["redis"]
    assert "platform-redis" not in env["AIRFLOW__CELERY__BROKER_URL"]


def test_airflow_services_wait_for_init_and_the_databases(services):
    for name in AIRFLOW_SERVICES:
        if name == "airflow-init":
            continue
        depends = mapping(services[name].get("depends_on"))
        assert depends.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
        assert depends.get("postgres", {}).get("condition") == "service_healthy", name
        assert depends.get("redis", {}).get("condition") == "service_healthy", name
    init_env = mapping(services["airflow-init"]["environment"])
    assert init_env.get("_AIRFLOW_DB_MIGRATE") == "true"


def test_every_airflow_container_mounts_the_project_and_the_backups(compose, airflow_containers):
    assert "backups" in compose.get("volumes", {}), "named volume `backups` is not declared"
    for name, service in airflow_containers.items():
        mounted = mounts(service)
        for target, source in PROJECT_MOUNTS.items():
            assert mounted.get(target) == source, f"{name}: {source} is not mounted at {target}"
            assert (REPO / source).is_dir(), f"{source} does not exist in the repository"
        assert mounted.get(BACKUP_ROOT) == "backups", f"{name}: the backups volume is not at {BACKUP_ROOT}"


def test_config_dir_points_at_the_mounted_include_config(common):
    env = mapping(common["environment"])
    config_dir = env["AIPLATFORM_OPS_CONFIG_DIR"]
    include_target = "/opt/airflow/include"
    assert config_dir.startswith(include_target + "/")
    local = REPO / PROJECT_MOUNTS[include_target] / config_dir[len(include_target) + 1 :]
    assert (local / "backup_policy.yaml").is_file(), f"{config_dir} maps to {local}, which has no policy"


def test_local_backup_locations_are_on_the_backup_volume():
    policy = yaml.safe_load(POLICY_FILE.read_text())
    local = [
        location
        for section in policy.values()
        if isinstance(section, dict)
        for location in section.get("locations", [])
        if not location.startswith("s3://")
    ]
    assert local, "the policy names no local location"
    for location in local:
        assert location == BACKUP_ROOT or location.startswith(BACKUP_ROOT + "/"), location


# ----------------------------------------------------------------------------- connections


@pytest.mark.parametrize(("conn_id", "conn_type"), sorted(CONNECTIONS.items()))
def test_connection_parses_as_expected_type(conn_id, conn_type, worker_env, monkeypatch):
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    name = "AIRFLOW_CONN_" + conn_id.upper()
    assert name in worker_env, f"{name} is not set"
    monkeypatch.setenv(name, worker_env[name])
    conn = EnvironmentVariablesBackend().get_connection(conn_id)
    assert conn is not None
    assert conn.conn_type == conn_type


def _conn(conn_id: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    monkeypatch.setenv("AIRFLOW_CONN_" + conn_id.upper(), worker_env["AIRFLOW_CONN_" + conn_id.upper()])
    return EnvironmentVariablesBackend().get_connection(conn_id)


def test_mysql_connection_reaches_the_platform_database(services, worker_env, dotenv, monkeypatch):
    conn = _conn("aiplatform_mysql", worker_env, monkeypatch)
    assert (conn.host, conn.port, conn.schema) == ("mysql", 3306, "aiplatform")
    assert conn.host in services
    assert services["mysql"]["environment"]["MYSQL_DATABASE"] == conn.schema
    assert conn.password == dotenv["MYSQL_BACKUP_PASSWORD"]
    # mysql-init creates exactly this account.
    init_env = {k: interpolate(str(v), dotenv) for k, v in mapping(services["mysql-init"]["environment"]).items()}
    assert (init_env["MYSQL_BACKUP_USER"], init_env["MYSQL_BACKUP_PASSWORD"]) == (conn.login, conn.password)
    grants = command_text(services["mysql-init"])
    for privilege in ("RELOAD", "REPLICATION CLIENT", "REPLICATION SLAVE"):
        assert privilege in grants, f"the backup account lacks {privilege}"


def test_s3_connection_uses_minio_with_the_init_access_key(services, worker_env, dotenv, monkeypatch):
    conn = _conn("aiplatform_s3", worker_env, monkeypatch)
    extra = conn.extra_dejson
    assert extra["endpoint_url"] == "http://minio:9000"
    assert extra["region_name"] == "us-east-1"
    assert "minio" in services and "127.0.0.1:9000:9000" in services["minio"]["ports"]
    init_env = {k: interpolate(str(v), dotenv) for k, v in mapping(services["minio-init"]["environment"]).items()}
    assert (conn.login, conn.password) == (init_env["S3_ACCESS_KEY"], init_env["S3_SECRET_KEY"])
    assert re.search(
        r"mc admin user add local \"\$\{S3_ACCESS_KEY\}\"", command_text(services["minio-init"]).replace("$$", "$")
    )


def test_redis_connection_is_the_platform_cache(services, worker_env, dotenv, monkeypatch):
    conn = _conn("aiplatform_redis", worker_env, monkeypatch)
    assert (conn.host, conn.port) == ("platform-redis", 6379)
    assert conn.extra_dejson.get("db") == 0  # RedisHook reads the database number from the extra
    assert conn.password == dotenv["PLATFORM_REDIS_PASSWORD"]
    command = [interpolate(str(part), dotenv) for part in services["platform-redis"]["command"]]
    assert command[command.index("--requirepass") + 1] == conn.password


def test_kubernetes_and_ssh_credentials_are_mounted(airflow_containers, worker_env, monkeypatch):
    k8s = _conn("aiplatform_k8s", worker_env, monkeypatch)
    assert k8s.extra_dejson.get("in_cluster") is False
    kube_config = k8s.extra_dejson["kube_config_path"]
    ssh = _conn("aiplatform_ssh", worker_env, monkeypatch)
    assert ssh.host and ssh.login and ssh.port == 22
    assert ssh.extra_dejson.get("no_host_key_check") is False
    key_file = ssh.extra_dejson["key_file"]
    for name, service in airflow_containers.items():
        targets = mounts(service)
        for path in (kube_config, key_file):
            assert any(path.startswith(target.rstrip("/") + "/") for target in targets), (
                f"{name}: {path} is not under a mounted folder"
            )


# ----------------------------------------------------------------------------- platform services


def test_mysql_runs_with_binary_logs_and_gtids(services):
    mysql = services["mysql"]
    assert str(mysql["image"]).startswith("mysql:8")
    flags = {}
    for arg in mysql["command"]:
        key, _, value = str(arg).removeprefix("--").partition("=")
        flags[key.replace("_", "-")] = value
    assert flags.get("log-bin") not in (None, "OFF", "0"), "binary logs are off"
    assert flags.get("binlog-format", "ROW").upper() == "ROW"
    assert int(flags.get("server-id", "0")) >= 1
    assert flags.get("gtid-mode", "").upper() == "ON"
    assert flags.get("enforce-gtid-consistency", "").upper() == "ON"
    assert "skip-log-bin" not in flags and "disable-log-bin" not in flags
    assert "healthcheck" in mysql


def test_minio_init_creates_the_buckets_the_policy_names(services):
    buckets = policy_buckets(yaml.safe_load(POLICY_FILE.read_text()))
    assert buckets, "the backup policy names no s3:// location"
    init = services["minio-init"]
    script = command_text(init)
    for bucket in buckets:
        assert re.search(rf"^\s*mc mb\b[^\n]*\blocal/{re.escape(bucket)}(\s|$)", script, re.MULTILINE), (
            f"minio-init does not create bucket {bucket!r}"
        )
    assert mapping(init["depends_on"])["minio"]["condition"] == "service_healthy"
    assert mapping(services["airflow-worker"]["depends_on"])["minio-init"]["condition"] == (
        "service_completed_successfully"
    )


# ----------------------------------------------------------------------------- secrets and wiring


def test_no_password_is_written_in_the_compose_file(compose):
    problems = []
    for node in [compose["x-airflow-common"], *compose["services"].values()]:
        for key, value in mapping(node.get("environment")).items():
            if _SECRET_KEY.search(key) and not _SECRET_REF.fullmatch(str(value)):
                problems.append(f"{key}={value}")
        command = node.get("command")
        if isinstance(command, list) and "--requirepass" in command:
            secret = str(command[command.index("--requirepass") + 1])
            if not _SECRET_REF.fullmatch(secret):
                problems.append(f"--requirepass {secret}")
    for raw in walk_strings(compose):
        text = raw.replace("$$", "$")  # a container-side `$${X}` is a reference too
        for _, password in _URI_USERINFO.findall(text):
            if not _SECRET_REF.fullmatch(password):
                problems.append(f"password in URI: {password!r}")
        for password in _JSON_PASSWORD.findall(text):
            if not _SECRET_REF.fullmatch(password):
                problems.append(f"password in JSON: {password!r}")
        if re.search(r"(?<![\w-])-p(?=\S)|--password=", text):
            problems.append(f"password on a command line: {text[:80]!r}")
    assert not problems, problems


def test_every_variable_is_documented_in_env_example(env_example):
    text = COMPOSE_FILE.read_text().replace("$$", "")
    required = set()
    for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?", text):
        name, op = match.group(1), match.group(2)
        if op is None or op.endswith("?"):
            required.add(name)
    missing = sorted(required - set(env_example))
    assert not missing, f"required in docker-compose.yaml but not in .env.example: {missing}"
    # And every value resolves, so `docker compose config` would accept .env.example as it is.
    for text_value in walk_strings(yaml.safe_load(COMPOSE_FILE.read_text())):
        interpolate(text_value, env_example)


def test_every_depends_on_names_a_service_that_can_satisfy_it(services):
    for name, service in services.items():
        for dependency, spec in mapping(service.get("depends_on")).items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            condition = (spec or {}).get("condition", "service_started") if isinstance(spec, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", f"{dependency} never completes"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source in mounts(service).values():
            if not source.startswith(("/", ".", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


# ----------------------------------------------------------------------------- image


def test_dockerfile_builds_on_the_pinned_airflow_with_the_constraints():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    pinned = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned
    base = [line for line in instructions if line.upper().startswith("FROM ")]
    assert base and base[0].split()[1] == f"apache/airflow:{pinned.group(1)}-python3.11"

    apt = " ".join(line for line in instructions if "apt-get install" in line)
    for package in ("mariadb-client", "zstd", "openssh-client"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", apt), f"{package} is not installed"

    copied = " ".join(line for line in instructions if line.upper().startswith("COPY "))
    assert "requirements.txt" in copied and "constraints.txt" in copied
    pip = [line for line in instructions if re.search(r"\bpip install\b", line)]
    assert pip, "no pip install"
    for line in pip:
        assert re.search(r"-r \S*requirements\.txt", line), line
        assert re.search(r"-c \S*constraints\.txt", line), f"installs without the constraints: {line}"


def test_dockerignore_keeps_secrets_and_the_venv_out_of_the_build_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", ".git"} <= ignored
    assert "requirements.txt" not in ignored and "constraints.txt" not in ignored
