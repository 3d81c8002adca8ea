"""The app image in a region's registry: built and pushed under its content tag (with Docker, Podman or Buildah,
whichever is here), or a published tag used as it is; either way, the registry is asked whether it has the tag
before anything is deployed (the OCI distribution API, with the registry's own token flow), so a cluster is never
left pulling a tag that does not exist."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from demokit.errors import NOT_READY, UNREACHABLE, UserError
from demokit.images import builder
from demokit.targets import ROOT

Say = Callable[[str], None]
ACCEPT = ", ".join(("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"))


def split(image: str) -> tuple[str, str]:
    """`registry.example.com:5000/team/metalmart` → (`registry.example.com:5000`, `team/metalmart`)."""
    host, _, repository = image.partition("/")
    if not repository or not ("." in host or ":" in host or host == "localhost"):
        return "registry-1.docker.io", image if "/" in image else f"library/{image}"
    return host, repository


def _credentials() -> tuple[str, str] | None:
    """REGISTRY_USERNAME / REGISTRY_PASSWORD from the environment (never from the repository or a command line)."""
    user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    return (user, password) if user and password else None


def _scheme(host: str) -> str:
    return "http" if host.startswith(("127.0.0.1", "localhost")) else "https"


def has_tag(image: str, tag: str, timeout: float = 10.0) -> bool:
    """Whether the registry serves image:tag (a HEAD of its manifest; a 401 is answered with the registry's token
    flow, anonymous or with REGISTRY_USERNAME / REGISTRY_PASSWORD)."""
    host, repository = split(image)
    url = f"{_scheme(host)}://{host}/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            if exc.code == 401 and "Authorization" not in headers:
                headers["Authorization"] = _authorization(exc.headers.get("WWW-Authenticate", ""), repository)
                continue
            raise UserError(f"the registry {host} answered {exc.code} for {repository}:{tag}; check "
                            "REGISTRY_USERNAME / REGISTRY_PASSWORD", UNREACHABLE) from None
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"the registry {host} is unreachable ({exc})", UNREACHABLE) from None
    raise UserError(f"the registry {host} refused {repository}:{tag} even with a token; check "
                    "REGISTRY_USERNAME / REGISTRY_PASSWORD", UNREACHABLE)


def _authorization(challenge: str, repository: str) -> str:
    credentials = _credentials()
    basic = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else ""
    if challenge.lower().startswith("basic"):
        if not basic:
            raise UserError("the registry wants a login: set REGISTRY_USERNAME and REGISTRY_PASSWORD", NOT_READY)
        return basic
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    if not realm:
        raise UserError(f"the registry's challenge is not understood: {challenge[:80]!r}", UNREACHABLE)
    params.setdefault("scope", f"repository:{repository}:pull")
    request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(params)}",
                                     headers={"Authorization": basic} if basic else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            token = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"the registry's token service {realm} did not give a token ({exc}); check "
                        "REGISTRY_USERNAME / REGISTRY_PASSWORD", UNREACHABLE) from None
    return f"Bearer {token.get('token') or token.get('access_token')}"


def publish(image: str, tag: str, platform: str, say: Say) -> None:
    """Build the app image for the region's nodes' platform and push it as image:tag with the builder found here."""
    tool = builder.find()
    if tool is None:
        raise UserError("no Docker, Podman or Buildah here to build the app image for the region's registry: install "
                        "one (https://docs.docker.com/get-docker/, https://podman.io/docs/installation), or set "
                        "region_image_policy: published and region_image_tag in the region's inventory", NOT_READY)
    ref = f"{image}:{tag}"
    build = builder.build_argv(tool, ref, ROOT, platform)
    for argv, what in ((build, "build"), ([tool, "push", ref], "push")):
        made_for = f" for {platform}" if what == "build" else ""
        say(f"image: {what} {ref}{made_for} with {os.path.basename(tool)}")
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
            raise UserError(f"the image {what} of {ref} failed: {' | '.join(tail)}", NOT_READY)
