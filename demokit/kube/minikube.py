"""The laptop's minikube: what its driver can give a new profile, checked before `minikube start` is asked for
more (minikube refuses with MK_USAGE when Docker Desktop or the laptop has less than --memory)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

import psutil

from demokit.targets import Target

NO_PROFILE = 85  # `minikube status` for a profile that does not exist


@dataclass(frozen=True)
class Offer:
    who: str  # "Docker", "Podman", "this machine"
    cpus: int
    memory_mb: int


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def profile_exists(profile: str) -> bool:
    done = _run(["minikube", "status", "--profile", profile, "--output", "json"])
    return done is None or done.returncode != NO_PROFILE


def driver(target: Target) -> str:
    """The inventory's minikube_driver, else minikube's configured default, else the container runtime here."""
    named = str(target.get("minikube_driver") or "")
    if named:
        return named
    done = _run(["minikube", "config", "get", "driver"])
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    return next((d for d in ("docker", "podman") if shutil.which(d)), "")


def offer(driver_name: str) -> Offer | str:
    """What the driver can give a profile, or one line saying why it cannot be asked."""
    if driver_name == "docker":
        done = _run(["docker", "info", "--format", "{{json .}}"])
        if done is None or done.returncode != 0:
            return "Docker does not answer (`docker info` failed): start Docker Desktop (or the Docker service) first"
        info = json.loads(done.stdout)
        return Offer("Docker", int(info["NCPU"]), int(info["MemTotal"]) // 2**20)
    if driver_name == "podman":
        done = _run(["podman", "info", "--format", "json"])
        if done is None or done.returncode != 0:
            return "Podman does not answer (`podman info` failed): start the Podman machine (podman machine start)"
        host = json.loads(done.stdout)["host"]
        return Offer("Podman", int(host["cpus"]), int(host["memTotal"]) // 2**20)
    # A virtual machine driver (qemu, hyperkit, kvm2, virtualbox, ...) takes from the laptop itself.
    return Offer("this machine", psutil.cpu_count() or 1, psutil.virtual_memory().total // 2**20)


def problem(target: Target) -> str | None:
    """One line when a new profile would ask for more than the driver offers; nothing for an existing profile
    (its CPUs and memory were fixed when it was made, and are not passed again)."""
    profile = str(target.get("minikube_profile"))
    if profile_exists(profile):
        return None
    found = offer(driver(target))
    if isinstance(found, str):
        return found
    cpus, memory = int(target.get("minikube_cpus")), int(target.get("minikube_memory_mb"))
    where = f"inventories/{target.name}/group_vars/all.yml"
    if memory > found.memory_mb:
        return (f"minikube_memory_mb is {memory} but {found.who} offers {found.memory_mb} MiB: set "
                f"minikube_memory_mb: {min(4096, found.memory_mb // 1024 * 1024)} in {where} (the demo requests "
                f"about 2 GiB), or give {found.who} more memory")
    if cpus > found.cpus:
        return (f"minikube_cpus is {cpus} but {found.who} offers {found.cpus}: set minikube_cpus: {found.cpus} in "
                f"{where}, or give {found.who} more CPUs")
    return None
