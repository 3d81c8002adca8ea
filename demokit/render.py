"""Rendering offline: the mirrord config and the queue-splitting resources, from `templates/` and a target's
variables. The templates use Ansible's `to_nice_json` / `to_nice_yaml` filters, so the same files serve the Ansible
roles; here they are rendered with the same filters by Jinja2 directly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml

from demokit.errors import USAGE, UserError
from demokit.targets import ROOT, Target

TEMPLATES = ROOT / "templates"
SPLIT_TEMPLATES = {
    "current": ("k8s/mirrord/propertylist.yaml.j2", "k8s/mirrord/splitconfig.yaml.j2"),
    "legacy": ("k8s/mirrord/kafkaclientconfig.yaml.j2", "k8s/mirrord/kafkatopicsconsumer.yaml.j2"),
}


def to_nice_json(value: Any) -> str:
    return json.dumps(value, indent=4, sort_keys=True)


def to_nice_yaml(value: Any) -> str:
    return yaml.safe_dump(value, indent=4, sort_keys=True, allow_unicode=True, default_flow_style=False)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["to_nice_json"] = to_nice_json
    env.filters["to_nice_yaml"] = to_nice_yaml
    return env


def check_filter(regex: str) -> None:
    """mirrord's schema does not check that a filter compiles; the CLI does and fails the session, so we do first."""
    if not regex:
        raise UserError("the e-mail filter is empty, and an empty filter matches nothing; e.g. '^.+@metalbear\\.com$'",
                        USAGE)
    try:
        re.compile(regex)
    except re.error as exc:
        raise UserError(f"the e-mail filter {regex!r} is not a valid regex ({exc}); e.g. '^.+@metalbear\\.com$'",
                        USAGE) from None


def mirrord_config(target: Target, email_filter: str | None = None) -> dict[str, Any]:
    values = {**target.vars, **({"mirrord_email_filter": email_filter} if email_filter else {})}
    check_filter(str(values.get("mirrord_email_filter", "")))
    try:
        text = environment().get_template("mirrord/order-processor.json.j2").render(**values)
    except jinja2.UndefinedError as exc:
        raise UserError(f"target {target.name!r} lacks a variable the mirrord config needs: {exc}", USAGE) from None
    return json.loads(text)


def split_resources(target: Target) -> list[dict[str, Any]]:
    model = target.get("mirrord_splitting_model", "current")
    if model not in SPLIT_TEMPLATES:
        raise UserError(f"mirrord_splitting_model must be one of {', '.join(SPLIT_TEMPLATES)} (got {model!r})", USAGE)
    env = environment()
    try:
        return [yaml.safe_load(env.get_template(name).render(**target.vars)) for name in SPLIT_TEMPLATES[model]]
    except jinja2.UndefinedError as exc:
        raise UserError(f"target {target.name!r} lacks a variable the splitting resources need: {exc}",
                        USAGE) from None


def write(out: Path, target: Target, email_filter: str | None = None) -> list[Path]:
    """Write what the target would apply into `out`: the mirrord config and one file per cluster object."""
    config = mirrord_config(target, email_filter)
    written = []
    (out / ".mirrord").mkdir(parents=True, exist_ok=True)
    path = out / ".mirrord" / "order-processor.json"
    path.write_text(to_nice_json(config) + "\n")
    written.append(path)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for doc in split_resources(target):
        path = out / "manifests" / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(to_nice_yaml(doc))
        written.append(path)
    return written
