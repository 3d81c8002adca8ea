"""`./run provision --region R`: a sales region's shared demo clusters, each guarded, locked, imaged and deployed."""

from __future__ import annotations

from invoke import Context

from demokit import images, targets
from demokit.errors import NOT_READY, USAGE, UserError
from demokit.kube import cluster, registry
from demokit.kube.region import Lease, guard
from demokit.taskdef import task
from demokit.tasks.common import say


def regions(folder: str) -> list[str]:
    """The inventories that are regions (a `region` variable; region.example is the template)."""
    found = []
    for name in targets.available(folder):
        if "." in name:
            continue
        text = (targets.inventory_dir(folder) / name / "group_vars" / "all.yml")
        if text.is_file() and "\nregion:" in "\n" + text.read_text():
            found.append(name)
    return found


def image_tag(target: targets.Target, check: bool) -> str:
    """The tag the region's clusters will pull, present in its registry (built and pushed first when the policy is
    `content` and the registry does not have it yet)."""
    image = str(target.get("metalmart_image_name"))
    policy = str(target.get("region_image_policy") or "content")
    if policy not in ("content", "published"):
        raise UserError(f"region_image_policy must be content or published (got {policy!r})", USAGE)
    tag = images.content_tag() if policy == "content" else str(target.get("region_image_tag") or "")
    if not tag:
        raise UserError("region_image_policy is published but region_image_tag is empty: name the published tag",
                        USAGE)
    if registry.has_tag(image, tag):
        say(f"image: {image}:{tag} is in the registry")
        return tag
    if policy == "published":
        raise UserError(f"the registry has no {image}:{tag}: publish it first, or set region_image_tag to a tag it "
                        "has", NOT_READY)
    if check:
        say(f"image: would build and push {image}:{tag} (not in the registry yet)")
        return tag
    registry.publish(image, tag, str(target.get("region_image_platform") or "linux/amd64"), say)
    if not registry.has_tag(image, tag):
        raise UserError(f"the push of {image}:{tag} succeeded, yet the registry does not serve it", NOT_READY)
    return tag


@task(help={"region": "the region, an inventory under inventories/ with `region` set (e.g. emea)",
            "limit": "only this cluster of the region",
            "check": "show what would change, change nothing",
            "force": "take over a provisioning lease whose holder stopped renewing it",
            "verbose": "show Ansible's own output"})
def provision(c: Context, region: str = "", limit: str = "", check: bool = False, force: bool = False,
              verbose: bool = False) -> None:
    """Deploy the demo to every cluster of a sales region (or one: --limit).

    A context guard, one provisioner at a time, the image in the region's registry, then the same roles as
    fresh-start."""
    folder = c.config.metalmart.inventories
    known = regions(folder)
    if region not in known:
        raise UserError(f"--region must be one of {', '.join(known) or 'none'} (got {region!r}); e.g. --region "
                        f"{known[0] if known else 'emea'}", USAGE)
    first = targets.load(region, folder)
    if limit and limit not in first.hosts:
        raise UserError(f"region {region} has no cluster {limit!r}; its clusters: {', '.join(first.hosts)}", USAGE)
    cluster.preflight(first, say)
    for host in [limit] if limit else list(first.hosts):
        target = targets.load(region, folder, host)
        say(f"{host}: {'checking' if check else 'provisioning'} ({target.get('kube_context')}, namespace "
            f"{target.get('metalmart_namespace')})")
        guard(target, host, say)
        tag = image_tag(target, check)
        lease = Lease(target, host, say)
        if not check:  # --check changes nothing, not even the lease
            lease.acquire(force)
        try:
            run = cluster.run_playbook(target, "deploy-cluster", say, {"metalmart_image_tag": tag,
                                                                        "verify_enabled": not check},
                                       verbose, log_name=f"provision-{host}", check=check)
        finally:
            if not check:
                lease.release()
        if lease.lost:
            raise UserError(f"{host}: the provisioning lease was lost during the run ({lease.lost})", NOT_READY)
        say(f"{host}: " + ("(nothing would change)" if check and run.changed == 0 else
                           f"{run.changed} change(s) would be made" if check else
                           "(nothing changed)" if run.changed == 0 else f"{run.changed} change(s)"))


TASKS = {"provision": provision}
