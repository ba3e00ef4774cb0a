"""The services inventory: the shipped file, the order it implies, and errors that name file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aiplatform_ops.config import ConfigError
from aiplatform_ops.services.inventory import KubernetesControl, SystemdControl, load_services, parse_inventory

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "config"


def test_shipped_inventory_holds_the_manuals_five_services_in_a_safe_order():
    inventory = load_services(SHIPPED)
    start = [s.name for s in inventory.start_order()]
    assert sorted(start) == sorted(["aiplatform-gateway", "aiplatform-auth", "aiplatform-system",
                                    "aiplatform-training", "aiplatform-dataset"])
    assert start[0] == "aiplatform-auth" and start[-1] == "aiplatform-gateway"
    assert [s.name for s in inventory.stop_order()] == list(reversed(start))
    for spec in inventory.services:
        assert spec.health, f"{spec.name} has no health check"
        assert all(start.index(dep) < start.index(spec.name) for dep in spec.depends_on)
    auth = inventory.get("aiplatform-auth").control
    assert isinstance(auth, SystemdControl) and auth.targets[0].ssh_conn_id == "aiplatform_ssh"
    assert auth.commands.render("stop", auth.unit) == "systemctl stop aiplatform-auth.service"
    gateway = inventory.get("aiplatform-gateway").control
    assert isinstance(gateway, KubernetesControl) and gateway.k8s_conn_id == "aiplatform_k8s"
    assert (gateway.namespace, gateway.default_replicas) == ("aiplatform", 3)


def test_subset_keeps_dependency_order_and_rejects_unknown_names():
    inventory = load_services(SHIPPED)
    assert [s.name for s in inventory.stop_order(["aiplatform-auth", "aiplatform-gateway"])] == [
        "aiplatform-gateway", "aiplatform-auth"]
    with pytest.raises(KeyError, match="aiplatform-nope"):
        inventory.start_order(["aiplatform-nope"])


def test_unit_names_are_shell_quoted_into_commands():
    data = {"services": {"svc": {"systemd": {"unit": "svc.service", "commands": {"stop": "sudo -n systemctl stop {unit}"}}}}}
    control = parse_inventory(Path("services.yaml"), data).get("svc").control
    assert control.commands.render("stop", "a b") == "sudo -n systemctl stop 'a b'"
    assert control.commands.render("start", "svc.service") == "systemctl start svc.service"


def _shipped() -> dict:
    return yaml.safe_load((SHIPPED / "services.yaml").read_text())


def _mutate(change) -> dict:
    data = copy.deepcopy(_shipped())
    change(data)
    return data


@pytest.mark.parametrize(("change", "key", "reason"), [
    (lambda d: d["services"]["aiplatform-auth"].update(depends_on=["aiplatform-gateway"]), "services",
     "dependency cycle"),
    (lambda d: d["services"]["aiplatform-system"].update(depends_on=["aiplatform-nope"]),
     "services.aiplatform-system.depends_on", "unknown service"),
    (lambda d: d["services"]["aiplatform-auth"]["systemd"].update(comands={}),
     "services.aiplatform-auth.systemd.comands", "unknown key"),
    (lambda d: d["services"]["aiplatform-auth"].update(kubernetes={"deployment": "x"}),
     "services.aiplatform-auth.(control)", "exactly one"),
    (lambda d: d["services"]["aiplatform-auth"]["systemd"].update(commands={"stop": "kill {pid}"}),
     "services.aiplatform-auth.systemd.commands.stop", "placeholder"),
    (lambda d: d["services"]["aiplatform-dataset"]["health"].append({"type": "tcp", "host": "h", "port": 70000}),
     "services.aiplatform-dataset.health[2].port", "65535"),
    (lambda d: d["services"]["aiplatform-gateway"]["health"][0].update(url="gateway:8080"),
     "services.aiplatform-gateway.health[0].url", "does not match"),
    (lambda d: d["services"]["aiplatform-gateway"]["kubernetes"].update(replicas=0),
     "services.aiplatform-gateway.kubernetes.replicas", "at least 1"),
    (lambda d: d["defaults"].pop("namespace"), "services.aiplatform-training.kubernetes.namespace", "missing"),
    (lambda d: d["services"].update({"Bad_Name": {"systemd": {}}}), "services.Bad_Name", "lower case"),
])
def test_invalid_inventory_names_file_key_and_reason(tmp_path, change, key, reason):
    (tmp_path / "services.yaml").write_text(yaml.safe_dump(_mutate(change), sort_keys=False))
    with pytest.raises(ConfigError) as error:
        load_services(tmp_path)
    assert error.value.file == str(tmp_path / "services.yaml")
    assert error.value.key == key
    assert reason in error.value.reason
