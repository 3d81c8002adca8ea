"""Targets are Ansible inventories: `inventories/<name>/hosts.yml` with `group_vars/all.yml` saying what it is."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from demokit.errors import USAGE, UserError

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("local", "minikube", "cluster")


def inventory_dir() -> Path:
    """`inventories/` of the repository; METALMART_INVENTORY_DIR points elsewhere (tests run a second stack)."""
    return Path(os.environ.get("METALMART_INVENTORY_DIR") or ROOT / "inventories")


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    path: Path
    vars: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.vars.get(key, default)

    def kubeconfig(self) -> str | None:
        """The inventory's `kubeconfig_path` (relative to the repository), or None for the usual KUBECONFIG."""
        raw = self.vars.get("kubeconfig_path")
        return str(raw if Path(raw).is_absolute() else ROOT / raw) if raw else None

    def state_dir(self) -> Path:
        raw = Path(self.vars.get("local_state_dir", f".metalmart/{self.name}"))
        return raw if raw.is_absolute() else ROOT / raw


def available() -> list[str]:
    base = inventory_dir()
    return sorted(p.name for p in base.iterdir() if (p / "hosts.yml").is_file()) if base.is_dir() else []


def load(name: str) -> Target:
    path = inventory_dir() / name
    if not (path / "hosts.yml").is_file():
        names = ", ".join(available()) or "none"
        raise UserError(f"no target {name!r}: there is no {path}/hosts.yml; known targets: {names}", USAGE)
    values: dict[str, Any] = {}
    group_vars = path / "group_vars"
    files = sorted(group_vars.glob("*.yml")) + sorted(group_vars.glob("*/*.yml")) if group_vars.is_dir() else []
    for file in files:
        text = file.read_text()
        if text.startswith("$ANSIBLE_VAULT"):
            continue  # secrets (the mirrord licence) are for Ansible only; nothing here needs them
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise UserError(f"{file} must hold a mapping of variables", USAGE)
        values.update(loaded)
    kind = values.get("target_kind")
    if kind not in KINDS:
        raise UserError(f"{path}/group_vars/all.yml must set target_kind to one of {', '.join(KINDS)}", USAGE)
    return Target(name, kind, path, values)


def default_name(announce: Any = print) -> str:
    """minikube when it is installed, otherwise `local` (said in one line)."""
    if shutil.which("minikube") and (inventory_dir() / "minikube").is_dir():
        return "minikube"
    announce("no minikube on this machine: using the `local` target (processes on this machine, no Kubernetes)")
    return "local"


def resolve(name: str | None, announce: Any = print) -> Target:
    return load(name or default_name(announce))
