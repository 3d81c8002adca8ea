"""`./run render`: what a target would apply, rendered offline (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, task

from demokit import images, targets
from demokit import render as renderer
from demokit.errors import friendly
from demokit.tasks.common import say


@task(help={"target": "a cluster inventory under inventories/ (minikube)", "out": "folder to write into",
            "email_filter": "regex on the customer_email header for your session (default: the inventory's)"})
@friendly
def render(c: Context, target: str = "minikube", out: str = "rendered", email_filter: str | None = None) -> None:
    """Write every manifest and the mirrord config a cluster target would apply into --out (offline, no cluster)."""
    for path in renderer.write(Path(out), targets.load(target), email_filter, images.content_tag()):
        say(f"wrote {path}")


@task(help={"target": "a cluster inventory under inventories/ (minikube)",
            "email_filter": "regex on the customer_email header, e.g. '^alice\\+.*@metalbear\\.com$'"})
@friendly
def mirrord_config(c: Context, target: str = "minikube", email_filter: str | None = None) -> None:
    """Write .mirrord/order-processor.json for your session (only orders matching the filter reach you)."""
    path = renderer.ROOT / ".mirrord" / "order-processor.json"
    text = renderer.to_nice_json(renderer.mirrord_config(targets.load(target), email_filter)) + "\n"
    if path.exists() and path.read_text() == text:
        say(f"{path} is up to date; nothing changed")
        return
    path.write_text(text)
    say(f"wrote {path}")


TASKS = {"render": render, "mirrord-config": mirrord_config}
