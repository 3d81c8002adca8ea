"""The task namespace: one module per domain, gathered into an explicit root collection."""

from invoke import Collection

from demokit.tasks import dev, load, stack

ns = Collection()
for module in (dev, load, stack):
    for name, task in module.TASKS.items():
        ns.add_task(task, name)
ns.configure({"run": {"echo": False, "pty": False}})
