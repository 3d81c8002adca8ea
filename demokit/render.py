"""Rendering offline: every Kubernetes object a cluster target would apply and the mirrord config, from `templates/`
with the target's variables over the roles' defaults. The roles apply the same templates (the list of objects is
`templates/k8s/manifests.yml`, read by both); the few Ansible filters they use (`to_nice_json`, `to_nice_yaml`,
`combine`) are given to Jinja2 here, so no Ansible run is needed to see what would be applied."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml

from demokit.errors import USAGE, UserError
from demokit.targets import ROOT, Target

TEMPLATES = ROOT / "templates"
ROLES = ROOT / "roles"
SPLIT_MODELS = ("current", "legacy")
# The groups of templates/k8s/manifests.yml that fresh-start applies, in order (queue splitting comes last).
DEPLOY_GROUPS = ("namespace", "postgres", "kafka", "metalmart_app", "seed")


def to_nice_json(value: Any) -> str:
    return json.dumps(value, indent=4, sort_keys=True)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_nice_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_NoAliases, indent=4, sort_keys=True, allow_unicode=True, default_flow_style=False)


def combine(*dicts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for d in dicts:
        merged.update(d)
    return merged


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["to_nice_json"] = to_nice_json
    env.filters["to_nice_yaml"] = to_nice_yaml
    env.filters["combine"] = combine
    env.filters["dirname"] = os.path.dirname
    return env


def manifests() -> dict[str, list[dict[str, str]]]:
    return yaml.safe_load((TEMPLATES / "k8s" / "manifests.yml").read_text())


def variables(target: Target, image_tag: str | None = None) -> dict[str, Any]:
    """The roles' defaults, then the target's inventory, then the image tag; templated defaults (`"{{ x }}"`) are
    resolved against the result, as Ansible would resolve them lazily."""
    values: dict[str, Any] = {"playbook_dir": str(ROOT / "playbooks")}
    for defaults in sorted(ROLES.glob("*/defaults/main.yml")):
        values.update(yaml.safe_load(defaults.read_text()) or {})
    values.update(target.vars)
    if image_tag is not None:
        values["metalmart_image_tag"] = image_tag
    env = environment()
    for _ in range(5):
        pending = {k: v for k, v in values.items() if isinstance(v, str) and "{{" in v}
        if not pending:
            break
        for key, raw in pending.items():
            values[key] = env.from_string(raw).render(**values)
    return values


def _objects(group: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    env = environment()
    docs = []
    for entry in manifests()[group]:
        items = values[entry["each"]] if "each" in entry else [None]
        for item in items:
            text = env.get_template("k8s/" + entry["template"]).render(**{**values, "item": item})
            docs.append(yaml.safe_load(text))
    return docs


def cluster_objects(target: Target, image_tag: str | None = None) -> list[dict[str, Any]]:
    """Every object fresh-start applies to the target, in order (the Secret with the generated PostgreSQL password is
    made in the cluster and is not rendered)."""
    if target.kind == "local":
        raise UserError(f"target {target.name!r} is a local target: it has no Kubernetes objects; "
                        "use --target minikube or a region", USAGE)
    values = variables(target, image_tag)
    try:
        docs = [doc for group in DEPLOY_GROUPS for doc in _objects(group, values)]
    except jinja2.UndefinedError as exc:
        raise UserError(f"target {target.name!r} lacks a variable the manifests need: {exc}", USAGE) from None
    return docs + split_resources(target)


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
    if model not in SPLIT_MODELS:
        raise UserError(f"mirrord_splitting_model must be one of {', '.join(SPLIT_MODELS)} (got {model!r})", USAGE)
    try:
        return _objects(f"queue_splitting_{model}", target.vars)
    except jinja2.UndefinedError as exc:
        raise UserError(f"target {target.name!r} lacks a variable the splitting resources need: {exc}",
                        USAGE) from None


def write(out: Path, target: Target, email_filter: str | None = None, image_tag: str | None = None) -> list[Path]:
    """Write what the target would apply into `out`: the mirrord config and one file per cluster object, numbered in
    the order they are applied."""
    objects = cluster_objects(target, image_tag)
    config = mirrord_config(target, email_filter)
    written = []
    (out / ".mirrord").mkdir(parents=True, exist_ok=True)
    path = out / ".mirrord" / "order-processor.json"
    path.write_text(to_nice_json(config) + "\n")
    written.append(path)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for n, doc in enumerate(objects, 1):
        path = out / "manifests" / f"{n:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(to_nice_yaml(doc))
        written.append(path)
    return written
