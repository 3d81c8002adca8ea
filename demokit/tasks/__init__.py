"""The task namespace: one module per domain, gathered into an explicit root collection (tasks.py adds the
benchmarks' collection, which imports the project and is never imported by it)."""

from invoke import Collection

from demokit.tasks import dev, doctor, kube, load, metrics, region, render, stack

ns = Collection()
for module in (dev, doctor, kube, load, metrics, region, render, stack):
    for name, task in module.TASKS.items():
        ns.add_task(task, name)
# Invoke's own configuration carries the project's settings: defaults here < invoke.yaml < INVOKE_METALMART_*
# in the environment < flags.
ns.configure({"run": {"echo": False, "pty": False},
              "metalmart": {"target": None, "inventories": "inventories"}})
