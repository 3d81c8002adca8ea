"""`./run render` and `./run mirrord-config`: what a target would apply, and the developer's mirrord config, both
written by the roles (playbooks/deploy-cluster.yml with a render folder, playbooks/mirrord-config.yml)."""

from __future__ import annotations

import re
from pathlib import Path

from invoke import Context

from demokit.config import mirrordcfg
from demokit.config import render as renderer
from demokit.errors import USAGE, UserError
from demokit.kube import cluster
from demokit.targets import ROOT, Target
from demokit.taskdef import task
from demokit.tasks.common import TARGET_HELP, cluster_target_of, say, target_of


@task(help={"target": "a cluster inventory under inventories/ (minikube)", "out": "folder to write into",
            "email_filter": "regex on the customer_email header for your session (default: the inventory's)",
            "verbose": "show Ansible's own output"})
def render(c: Context, target: str | None = None, out: str = "rendered", email_filter: str | None = None,
           verbose: bool = False) -> None:
    """Write every manifest and the mirrord config a cluster target would apply into --out (offline, no cluster)."""
    for path in renderer.write(Path(out), cluster_target_of(c, target), say, email_filter, verbose):
        say(f"wrote {path}")


@task(help={"user": "NAME: write .mirrord/NAME.json, matching exactly the e-mails `./run load --email-user NAME` "
                    "sends (and NAME@<domain>)",
            "email": "match one address, e.g. alice@metalbear.com",
            "email_filter": "a regex on the customer_email header, e.g. '^alice\\+.*@metalbear\\.com$'",
            "email_domain": "the domain of --user's e-mails (metalbear.com)",
            "output": "the file to write (default: .mirrord/NAME.json, or .mirrord/order-processor.json)",
            "up": "also write .mirrord/mirrord-up.yaml beside it: the processor as a `mirrord up` service, for "
                  "orders marked with a session key",
            "min_total": "AMOUNT: only those orders with a total of at least AMOUNT (a jq_filter on the order's "
                         "JSON body; mirrord CLI 3.232+, operator 3.183+)",
            "target": TARGET_HELP})
def mirrord_config(c: Context, user: str | None = None, email: str | None = None, email_filter: str | None = None,
                   email_domain: str = mirrordcfg.DOMAIN, output: str | None = None, target: str | None = None,
                   up: bool = False, min_total: str | None = None) -> None:
    """Write a mirrord config for one person's session: only orders matching its filter reach them."""
    given = [name for name, value in (("--user", user), ("--email", email), ("--email-filter", email_filter))
             if value is not None]
    if len(given) > 1:
        raise UserError(f"give one of --user, --email, --email-filter (got {' and '.join(given)})", USAGE)
    if user is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", user):
        raise UserError(f"--user must be a plain name like alice (got {user!r})", USAGE)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise UserError(f"--email must be an address like alice@metalbear.com (got {email!r})", USAGE)
    amount = _amount(min_total)
    resolved = target_of(c, target)
    regex = mirrordcfg.user_filter(user, email_domain) if user else mirrordcfg.address_filter(email) if email \
        else email_filter if email_filter is not None else str(resolved.get("mirrord_config_email_filter"))
    problem, checker = mirrordcfg.checked(regex)
    if problem:
        raise UserError(problem, USAGE)  # before Ansible starts: one line, no file touched
    path = Path(output) if output else ROOT / ".mirrord" / f"{user or 'order-processor'}.json"
    if path.suffix != ".json" or not path.parent.is_dir():
        raise UserError(f"--output {path}: must be a .json file in a folder that exists", USAGE)
    _check_queue_id(resolved)
    warning = mirrordcfg.coverage_warning(regex)
    if warning:
        say(warning)
    run = cluster.run_playbook(resolved, "mirrord-config", lambda _m: None,
                               {"mirrord_config_email_filter": regex, "mirrord_config_name": path.stem,
                                "mirrord_config_dir": str(path.parent.resolve()), "mirrord_config_up": up,
                                "mirrord_config_min_total": amount},
                               log_name="mirrord-config")
    kind = f"filter {regex}" + (f", total at least {amount:g}" if amount is not None else "")
    say(f"{path} is up to date; nothing changed" if run.changed == 0 else f"wrote {path} ({kind}; {checker})")
    if up:
        say(f"{path.parent / 'mirrord-up.yaml'}: run `mirrord up -f {path.parent / 'mirrord-up.yaml'} --key KEY` and "
            "place orders with ./run load --session-key KEY (or the storefront's session field)")


def _amount(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        amount = float(text)
    except ValueError:
        amount = float("nan")
    if not amount >= 0 or amount == float("inf"):
        raise UserError(f"--min-total must be an amount of 0 or more, like 500 (got {text!r})", USAGE)
    return amount


def _check_queue_id(target: Target) -> None:
    """The config's queue id must be the one the target's splitting resources declare, or the session finds no
    queue to split: checked against the cluster when it serves them (skipped, and said, when it cannot be asked)."""
    want = str(target.get("metalmart_queue_id"))
    try:
        found = cluster.queue_ids(target)
    except UserError as exc:
        say(f"could not read the splitting resources ({exc}); the queue id {want!r} is not checked")
        return
    if found and want not in found:
        raise UserError(f"the target's splitting resources declare queue id(s) {', '.join(sorted(found))}, but the "
                        f"config would name {want!r}: set metalmart_queue_id in the inventory to match, or "
                        f"./run fresh-start --target {target.name} to apply it", USAGE)


TASKS = {"render": render, "mirrord-config": mirrord_config}
