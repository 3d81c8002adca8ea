"""`k8s_objects`: the objects of groups of templates/k8s/manifests.yml, rendered, in the order they are applied.

One rule, one place: which entries a group has (an entry with `when` is left out while that variable is empty; one
with `each` renders its template once per item of that list, the item being `item`), and each rendered with the
task's variables by `template_shared`. The k8s_objects role applies them (and `./run render` writes them), and the
settled check dry-runs them, from the same list.

    query('k8s_objects', 'namespace', 'postgres', templates_dir=k8s_objects_templates_dir)
    → [{group, template, item, ready, object}, …]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
    name: k8s_objects
    short_description: the rendered objects of groups of templates/k8s/manifests.yml, in apply order
    description:
      - Each entry of each group (its `when` and `each` honoured), its template rendered with the task's variables.
    options:
      _terms:
        description: The groups.
      templates_dir:
        description: The folder holding k8s/manifests.yml and the templates.
        type: path
        required: true
"""

RETURN = """
  _raw:
    description: One dict per object, with its group, template, item, ready condition and the object.
    type: list
    elements: dict
"""


def entries(manifests: Mapping[str, list[Mapping[str, Any]]], groups: list[str],
            value_of: Any) -> list[dict[str, Any]]:
    """Each group's entries, in order: {group, template, item, ready}. `value_of(name)` is a variable's value."""
    out = []
    for group in groups:
        if group not in manifests:
            raise AnsibleError(f"no group {group!r} in manifests.yml")
        for entry in manifests[group]:
            if "when" in entry and not value_of(entry["when"]):
                continue
            for item in (value_of(entry["each"]) if "each" in entry else [None]):
                out.append({"group": group, "template": entry["template"], "item": item,
                            "ready": entry.get("ready", "")})
    return out


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        folder = Path(self.get_option("templates_dir"))
        manifests = yaml.safe_load((folder / "k8s" / "manifests.yml").read_text())
        render = lookup_loader.get("template_shared", loader=self._loader, templar=self._templar)
        found = entries(manifests, [str(t) for t in terms], self._templar.resolve_variable_expression)
        for entry in found:
            [text] = render.run([str(folder / "k8s" / entry["template"])], variables,
                                template_vars={"item": entry["item"]})
            entry["object"] = yaml.safe_load(text)
        return found
