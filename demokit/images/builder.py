"""How each builder is asked to build the app image: the same Dockerfile, context and flags everywhere a build
happens outside minikube (a region's publish, the tests' real build)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from demokit.images import DOCKERFILE

BUILDERS = ("docker", "podman", "buildah")


def find() -> str | None:
    """The first of Docker, Podman and Buildah on PATH."""
    return next((shutil.which(b) for b in BUILDERS if shutil.which(b)), None)


def build_argv(tool: str, ref: str, context: Path, platform: str | None = None, *extra: str) -> list[str]:
    """`TOOL build --file CONTEXT/Dockerfile [--platform P] --tag REF CONTEXT`. The platform is the nodes' (a
    region's nodes are linux/amd64 whatever laptop builds for them); without it a builder makes its own."""
    verb = "bud" if os.path.basename(tool) == "buildah" else "build"
    return [tool, verb, "--file", str(context / DOCKERFILE), *(["--platform", platform] if platform else []),
            *extra, "--tag", ref, str(context)]
