"""systemd units on the platform's hosts, driven over SSH.

The manual restarts the Java and Python services with ``systemctl``. The command templates come
from the services inventory (``{unit}`` is replaced by the shell-quoted unit name), so a host that
needs ``sudo -n`` or a test host with a fake unit only changes the inventory, not this code.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_TIMEOUT = 60.0


class ServiceControlError(RuntimeError):
    """A control command failed or a service did not reach the wanted state."""


class CommandRunner(Protocol):
    """Runs one shell command on a host; what the SSH connection offers us."""

    label: str

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]: ...


class ParamikoRunner:
    """A :class:`CommandRunner` over a connected ``paramiko.SSHClient``."""

    def __init__(self, client: Any, label: str = "ssh") -> None:
        self.client, self.label = client, label
        # Small request/answer exchanges stall on Nagle + delayed ACK (~40 ms each) without this.
        with contextlib.suppress(AttributeError, OSError):
            client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
        stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        stdin.close()
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out, err


@dataclass(frozen=True)
class SystemdCommands:
    """Shell command templates; ``{unit}`` is the only placeholder."""

    stop: str = "systemctl stop {unit}"
    start: str = "systemctl start {unit}"
    is_active: str = "systemctl is-active {unit}"

    def render(self, action: str, unit: str) -> str:
        return getattr(self, action).format(unit=shlex.quote(unit))


# What `systemctl is-active` prints; anything but "active" means not serving.
UNIT_STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance", "refreshing")


def unit_state(runner: CommandRunner, unit: str, commands: SystemdCommands, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The unit's state as ``systemctl is-active`` reports it (exit 0 only when active)."""
    rc, out, err = runner.run(commands.render("is_active", unit), timeout)
    state = out.strip().splitlines()[-1].strip() if out.strip() else ""
    if rc == 0:
        return state or "active"
    if state in UNIT_STATES or state == "unknown":
        return state
    raise ServiceControlError(f"{runner.label}: cannot read the state of {unit} (exit {rc}): {err.strip()[:300]}")


def _act(runner: CommandRunner, action: str, unit: str, commands: SystemdCommands, timeout: float) -> None:
    rc, _out, err = runner.run(commands.render(action, unit), timeout)
    if rc != 0:
        raise ServiceControlError(f"{runner.label}: {action} {unit} failed (exit {rc}): {err.strip()[:300]}")


def stop_unit(runner: CommandRunner, unit: str, commands: SystemdCommands, timeout: float = DEFAULT_TIMEOUT) -> None:
    _act(runner, "stop", unit, commands, timeout)


def start_unit(runner: CommandRunner, unit: str, commands: SystemdCommands, timeout: float = DEFAULT_TIMEOUT) -> None:
    _act(runner, "start", unit, commands, timeout)
