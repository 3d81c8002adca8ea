"""The app image's tag: a hash of everything that goes into the image, so unchanged code keeps its tag and a
re-deploy of it rolls no pod."""

from __future__ import annotations

import hashlib

from demokit.targets import ROOT

IMAGE_INPUTS = ("Dockerfile", "requirements/app.txt", "metalmart")


def content_tag() -> str:
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
