"""The app image: its content tag, its build context as a builder is sent it, and the argv each builder is given (the
stand-in for its base image, made locally for the tests and the test cluster, is demokit.testcluster.standin)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from demokit.images import context
from demokit.targets import ROOT

# What `--file` names on every build (roles/images, a region's publish): minikube adds the Dockerfile back to the
# context only when it is named.
DOCKERFILE = "Dockerfile"


def content_tag(root: Path = ROOT) -> str:
    """A hash of exactly what the image is built from (the context a builder is sent, `.dockerignore` and the
    Dockerfile among it): unchanged content keeps its tag, and a re-deploy of it rolls no pod."""
    digest = hashlib.sha256()
    for name in context.files(root, DOCKERFILE):
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
