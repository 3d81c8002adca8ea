"""The task namespace: one module per domain, gathered into an explicit root collection."""

from invoke import Collection

from demokit.tasks import bench, dev, doctor, kube, load, metrics, region, render, stack

ns = Collection()
for module in (dev, doctor, kube, load, metrics, region, render, stack):
    for name, task in module.TASKS.items():
        ns.add_task(task, name)
ns.add_collection(bench.ns)
# Invoke's own configuration carries the project's settings: defaults here < invoke.yaml < INVOKE_METALMART_*
# in the environment < flags.
ns.configure({"run": {"echo": False, "pty": False},
              "metalmart": {"target": None, "inventories": "inventories"}})
