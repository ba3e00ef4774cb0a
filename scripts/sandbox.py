"""Local sandbox services on loopback: MariaDB with binary logs, Redis and an S3 endpoint.

Used by ``make demo``/``make run`` (``python scripts/sandbox.py up``) and by the tests, which
start their own instances on free ports with data in a temporary folder. Nothing here is used
by the DAGs in production: they reach real services through Airflow connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".sandbox"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Service:
    """A process we started, with the folder that holds its data and log."""

    name: str
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None
    pid: int | None = None
    extra: dict = field(default_factory=dict)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.proc.pid if self.proc else self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _spawn(argv: list[str], log: Path, detach: bool) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=open(log, "ab"),  # noqa: SIM115 - handed to the child
        stderr=subprocess.STDOUT,
        start_new_session=detach,
    )


BACKUP_USER = "aiplatform_backup"


def start_mariadb(data_dir: Path, port: int | None = None, *, binlog: bool = True, detach: bool = False) -> Service:
    """A MariaDB server with its own datadir and port, binary logs on (ROW format)."""
    port = port or free_port()
    data_dir = Path(data_dir)
    datadir = data_dir / "data"
    fresh = not datadir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    socket_path = data_dir / "mysqld.sock"
    argv = [
        "mariadbd", "--no-defaults", f"--datadir={datadir}", f"--port={port}", "--bind-address=127.0.0.1",
        f"--socket={socket_path}", f"--pid-file={data_dir / 'mysqld.pid'}", "--user=root",
        "--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M", "--skip-name-resolve",
        "--max-allowed-packet=64M", "--innodb-flush-log-at-trx-commit=2",
    ]
    if binlog:
        argv += [f"--log-bin={datadir}/binlog", "--server-id=1", "--binlog-format=ROW", "--log-slave-updates=0"]
    proc = _spawn(argv, data_dir / "mariadb.log", detach)
    service = Service("mariadb", port, data_dir, proc, extra={"socket": str(socket_path)})
    wait_for(lambda: port_open(port) and _root_sql(service, "SELECT 1") is not None, "MariaDB", 90, proc)
    password_file = data_dir / "backup_password"
    if fresh or not password_file.exists():
        password = secrets.token_urlsafe(18)
        _root_sql(service, (
            f"CREATE USER IF NOT EXISTS '{BACKUP_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"ALTER USER '{BACKUP_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{BACKUP_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        ))
        password_file.write_text(password)
        password_file.chmod(0o600)
    service.extra.update(user=BACKUP_USER, password=password_file.read_text())
    return service


def _root_sql(service: Service, sql: str) -> str | None:
    """Run SQL as root over the server's socket (root has no password in the sandbox)."""
    result = subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={service.extra['socket']}", "-uroot", "-N", "-B", "-e", sql],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        if sql == "SELECT 1":
            return None
        raise RuntimeError(f"sandbox SQL failed: {result.stderr.strip()}")
    return result.stdout


def root_sql(service: Service, sql: str) -> str:
    out = _root_sql(service, sql)
    assert out is not None
    return out


def start_redis(data_dir: Path, port: int | None = None, *, detach: bool = False) -> Service:
    port = port or free_port()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no"]
    proc = _spawn(argv, data_dir / "redis.log", detach)
    wait_for(lambda: port_open(port), "Redis", 30, proc)
    return Service("redis", port, data_dir, proc)


def start_s3(data_dir: Path, port: int | None = None, *, detach: bool = False) -> Service:
    """An S3 API endpoint (moto server) on loopback."""
    port = port or free_port()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    moto = shutil.which("moto_server", path=str(BIN)) or shutil.which("moto_server")
    if not moto:
        raise RuntimeError("moto_server not found: install requirements-dev.txt")
    proc = _spawn([moto, "-H", "127.0.0.1", "-p", str(port)], data_dir / "s3.log", detach)
    wait_for(lambda: port_open(port), "S3 endpoint (moto)", 60, proc)
    return Service("s3", port, data_dir, proc)


def mysql_conn_uri(db: Service, schema: str = "aiplatform") -> str:
    user, password = db.extra["user"], db.extra["password"]
    return f"mysql://{user}:{quote(password, safe='')}@127.0.0.1:{db.port}/{schema}"


def s3_conn_json(s3: Service) -> str:
    return json.dumps({
        "conn_type": "aws",
        "login": "sandbox-access-key",
        "password": "sandbox-secret-key",
        "extra": {"endpoint_url": f"http://127.0.0.1:{s3.port}", "region_name": "us-east-1"},
    })


def redis_conn_uri(redis: Service) -> str:
    return f"redis://127.0.0.1:{redis.port}/0"


def write_sandbox_config(target: Path, backup_root: Path) -> Path:
    """Copy ``include/config`` for the sandbox: backups, the file tree and reports under ``backup_root``,
    the config set pointed at the project's copies of the manual's configs."""
    target.mkdir(parents=True, exist_ok=True)
    config_set = [REPO / "include" / d for d in ("nginx", "k8s", "jvm")] + [REPO / "include" / "redis" / "redis.conf"]
    for source in (REPO / "include" / "config").iterdir():
        if source.is_file():
            text = source.read_text()
            if source.name == "backup_policy.yaml":
                for folder in ("/backup/db/daily", "/backup/files/weekly", "/backup/config/versions"):
                    text = text.replace(f"- {folder}", f"- {backup_root}{folder}")
                text = text.replace("s3_server_side_encryption: AES256", "s3_server_side_encryption: null")
                text = text.replace("roots: [/app/aiplatform/data]", f"roots: [{backup_root}/app/aiplatform/data]")
                text = re.sub(r"(  paths:\n)(    - [^\n]*\n)+", lambda m: m.group(1) + "".join(
                    f"    - {p}\n" for p in config_set), text)
            text = text.replace("report_dir: /backup/", f"report_dir: {backup_root}/backup/")
            (target / source.name).write_text(text)
    make_sample_tree(backup_root / "app" / "aiplatform" / "data")
    return target


def make_sample_tree(root: Path) -> Path:
    """A small platform data tree (datasets, models, a symlink) for the file backup demo."""
    if root.exists():
        return root
    for dataset in range(3):
        folder = root / "datasets" / f"dataset-{dataset}"
        folder.mkdir(parents=True)
        for part in range(5):
            (folder / f"part-{part}.jsonl").write_text(
                "".join(f'{{"id": {i}, "text": "sample {dataset}/{part}/{i}"}}\n' for i in range(200)))
    (root / "models").mkdir()
    (root / "models" / "resnet50.bin").write_bytes(os.urandom(256 * 1024))
    (root / "models" / "latest").symlink_to("resnet50.bin")
    return root


def create_buckets(s3: Service, config: Path) -> list[str]:
    """Create the buckets the sandbox policy's ``s3://`` locations name."""
    import boto3

    buckets = sorted(set(re.findall(r"s3://([a-z0-9][a-z0-9.\-]+[a-z0-9])", (config / "backup_policy.yaml").read_text())))
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3.port}", region_name="us-east-1",
                          aws_access_key_id="sandbox-access-key", aws_secret_access_key="sandbox-secret-key")
    for bucket in buckets:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    return buckets


def up(base: Path) -> dict[str, str]:
    """Start (or reuse) the sandbox under ``base``; returns the environment that reaches it."""
    state_file = base / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if all(port_open(p) for p in state["ports"].values()):
            write_sandbox_config(base / "config", base)  # the project's config may have changed
            return state["env"]
        down(base)
    base.mkdir(parents=True, exist_ok=True)
    db = start_mariadb(base / "mariadb", detach=True)
    root_sql(db, "CREATE DATABASE IF NOT EXISTS aiplatform")
    redis = start_redis(base / "redis", detach=True)
    s3 = start_s3(base / "s3", detach=True)
    config = write_sandbox_config(base / "config", base)
    create_buckets(s3, config)
    env = {
        "AIRFLOW_CONN_AIPLATFORM_MYSQL": mysql_conn_uri(db),
        "AIRFLOW_CONN_AIPLATFORM_S3": s3_conn_json(s3),
        "AIRFLOW_CONN_AIPLATFORM_REDIS": redis_conn_uri(redis),
        "AIPLATFORM_OPS_CONFIG_DIR": str(config),
    }
    state = {
        "pids": {s.name: s.proc.pid for s in (db, redis, s3) if s.proc},
        "ports": {s.name: s.port for s in (db, redis, s3)},
        "env": env,
    }
    state_file.write_text(json.dumps(state, indent=2))
    state_file.chmod(0o600)
    return env


def down(base: Path) -> None:
    state_file = base / "state.json"
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    for name, pid in state["pids"].items():
        Service(name, 0, base, pid=pid).stop()
    state_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    if args.command == "down":
        down(args.dir)
        return
    env = up(args.dir)
    if args.command == "env":
        for key, value in env.items():
            print(f"export {key}='{value}'")
    else:
        print(f"sandbox up under {args.dir}: " + ", ".join(f"{k}" for k in env))


if __name__ == "__main__":
    main()


def start_sshd(data_dir: Path, port: int | None = None, *, detach: bool = False) -> Service:
    """A real OpenSSH server on loopback for the current user: key auth only, own host key.

    ``extra`` holds ``user``, ``key_file`` (the client's private key), ``host_key`` (the server's
    public key as ``type base64``) and ``known_hosts`` (a file trusting that key on this port).
    """
    import getpass

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("sshd not found: install openssh-server")
    port = port or free_port()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = data_dir / "ssh_host_ed25519_key", data_dir / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sandbox", "-f", str(key)],
                           check=True, stdout=subprocess.DEVNULL)
    authorized = data_dir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    user = getpass.getuser()
    home = data_dir / "home"
    home.mkdir(exist_ok=True)
    config = data_dir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {data_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        f"AllowUsers {user}", "LogLevel INFO",
        f"SetEnv HOME={home}",  # a clean home: the user's shell rc files stay out of every session
        "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    proc = _spawn([sshd, "-D", "-e", "-f", str(config)], data_dir / "sshd.log", detach)
    wait_for(lambda: port_open(port), "sshd", 30, proc)
    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts = data_dir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    return Service("sshd", port, data_dir, proc, extra={
        "user": user, "key_file": str(client_key), "host_key": host_pub, "known_hosts": str(known_hosts),
    })
