"""Targets are Ansible inventories: `inventories/<name>/hosts.yml` with `group_vars/` saying what it is.

A target's variables are Ansible's own: its inventory over the defaults of every role and under the roles' vars,
read through Ansible's inventory and variable managers and its loader, combined and templated by Ansible. Only the
order of those three layers is written here (Ansible's documented precedence), so what Python reads (a namespace, a
port, a topic) is what a playbook run on that target would use.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demokit.errors import USAGE, UserError

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("local", "minikube", "cluster")
DEFAULT_INVENTORIES = "inventories"
# The kube context `./run cluster start` writes for its control plane (the testcluster target's).
CONTROL_PLANE_CONTEXT = "metalmart-kube"


def inventory_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the inventories: Invoke's `metalmart.inventories` (relative to the repository)."""
    path = Path(folder or DEFAULT_INVENTORIES)
    return path if path.is_absolute() else ROOT / path


@functools.cache
def _ansible() -> Any:
    """Ansible's machinery, set up once: this repository's ansible.cfg, its plugins and the vault secrets."""
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()
    loader = DataLoader()
    loader.set_basedir(str(ROOT / "playbooks"))
    if C.DEFAULT_VAULT_PASSWORD_FILE:  # ANSIBLE_VAULT_PASSWORD_FILE: the mirrord licence's vault
        loader.set_vault_secrets(CLI.setup_vault_secrets(loader, vault_ids=[],
                                                         vault_password_files=[C.DEFAULT_VAULT_PASSWORD_FILE]))
    return loader


def _plain(value: Any) -> Any:
    """Ansible's tagged strings and lazy containers as plain Python values."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    _values: dict[str, Any] = field(repr=False, compare=False)
    _template: Callable[[Any], Any] = field(repr=False, compare=False)
    host: str = "localhost"  # the inventory host (a region's cluster) these variables are for
    hosts: tuple[str, ...] = ("localhost",)

    @property
    def kind(self) -> str:
        return str(self.get("target_kind"))

    def get(self, key: str, default: Any = None) -> Any:
        """The variable as a playbook on this target sees it (templated), or `default` when none defines it."""
        if key not in self._values:
            return default
        from ansible.errors import AnsibleError

        try:
            return _plain(self._template(self._values[key]))
        except AnsibleError as exc:
            raise UserError(f"target {self.name!r}: {key} cannot be worked out: {str(exc).splitlines()[0]}",
                            USAGE) from None

    def kubeconfig(self) -> str | None:
        """The inventory's `kubeconfig_path` (relative to the repository), or None for the usual KUBECONFIG."""
        raw = self.get("kubeconfig_path")
        return str(raw if Path(raw).is_absolute() else ROOT / raw) if raw else None

    def state_dir(self) -> Path:
        raw = Path(self.get("local_state_dir") or f".metalmart/{self.name}")
        return raw if raw.is_absolute() else ROOT / raw


def available(folder: str | os.PathLike[str] | None = None) -> list[str]:
    """The targets to offer: every inventory but the templates (`*.example`, copied to make a region)."""
    base = inventory_dir(folder)
    return sorted(p.name for p in base.iterdir() if (p / "hosts.yml").is_file() and p.suffix != ".example") \
        if base.is_dir() else []


def _role_files(loader: Any, kind: str) -> dict[str, Any]:
    """Every role's `kind` (defaults or vars) file, combined as Ansible combines them (no two roles share a name)."""
    from ansible.utils.vars import combine_vars

    combined: dict[str, Any] = {}
    for path in sorted((ROOT / "roles").glob(f"*/{kind}/main.yml")):
        combined = combine_vars(combined, loader.load_from_file(str(path), trusted_as_template=True) or {})
    return combined


def load(name: str, folder: str | os.PathLike[str] | None = None, host: str | None = None) -> Target:
    """The target `name`; for an inventory of several clusters (a region), the variables of `host` (by default its
    first cluster)."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.template import Templar
    from ansible.utils.vars import combine_vars
    from ansible.vars.manager import VariableManager

    path = inventory_dir(folder) / name
    if not (path / "hosts.yml").is_file():
        names = ", ".join(available(folder)) or "none"
        raise UserError(f"no target {name!r}: there is no {path}/hosts.yml; known targets: {names}", USAGE)
    loader = _ansible()
    try:
        inventory = InventoryManager(loader=loader, sources=[str(path / "hosts.yml")])
        hosts = inventory.get_hosts()
        if not hosts:
            raise UserError(f"{path}/hosts.yml names no host", USAGE)
        if host is not None:
            hosts = [h for h in hosts if h.name == host]
            if not hosts:
                known = ", ".join(h.name for h in inventory.get_hosts())
                raise UserError(f"target {name!r} has no cluster {host!r}; its clusters: {known}", USAGE)
        manager = VariableManager(loader=loader, inventory=inventory)
        # As a play over every role sees them: the roles' defaults under the inventory's values, the roles' own
        # vars over them (Ansible's precedence), each file read by Ansible's loader as a role's is. A Play of the
        # roles would say the same but parses every role's tasks too (0.25 s here, on every ./run).
        values = _role_files(loader, "defaults")
        values = combine_vars(values, manager.get_vars(host=hosts[0]))
        values = combine_vars(values, _role_files(loader, "vars"))
    except AnsibleError as exc:
        first = str(exc).strip().splitlines()[0]
        hint = "; export ANSIBLE_VAULT_PASSWORD_FILE" if "vault" in first.lower() else ""
        raise UserError(f"target {name!r}: Ansible cannot read {path}: {first}{hint}", USAGE) from None
    templar = Templar(loader=loader, variables=values)
    target = Target(name, path, dict(values), templar.template, hosts[0].name,
                    tuple(h.name for h in inventory.get_hosts()))
    if target.kind not in KINDS:
        raise UserError(f"{path}/group_vars/all.yml must set target_kind to one of {', '.join(KINDS)}", USAGE)
    return target


def default_name(folder: str | os.PathLike[str] | None = None, announce: Callable[[str], None] = print) -> str:
    """minikube when it is installed, otherwise `local` (said in one line)."""
    if shutil.which("minikube") and (inventory_dir(folder) / "minikube").is_dir():
        return "minikube"
    announce("no minikube on this machine: using the `local` target (processes on this machine, no Kubernetes)")
    return "local"


def resolve(name: str | None, folder: str | os.PathLike[str] | None = None,
            announce: Callable[[str], None] = print) -> Target:
    return load(name or default_name(folder, announce), folder)


def start_command(target: Target) -> str:
    """What starts the cluster of `target`: the project's own control plane (`./run cluster start`) for the targets
    that use it, else a fresh-start (which starts minikube; a region's cluster is its owner's to keep running)."""
    if target.get("kube_context") == CONTROL_PLANE_CONTEXT:
        return "./run cluster start"
    return f"./run fresh-start --target {target.name}"
