"""The task namespace: one module per domain, gathered into an explicit root collection."""

from invoke import Collection

from demokit.tasks import bench, dev, kube, load, metrics, render, stack

ns = Collection()
for module in (dev, kube, load, metrics, render, stack):
    for name, task in module.TASKS.items():
        ns.add_task(task, name)
ns.add_collection(bench.ns)
ns.configure({"run": {"echo": False, "pty": False}})
