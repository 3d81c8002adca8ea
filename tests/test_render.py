"""The mirrord config and the queue-splitting resources, rendered offline and validated against mirrord's own
schemas (../shared/mirrord, from MetalBear's repositories)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from demokit.errors import UserError
from tests.conftest import Rendered
from tests.helpers import ROOT, RUN

pytestmark = pytest.mark.stack  # ./run render (Ansible)

SHARED = ROOT.parent / "shared" / "mirrord"
needs_shared = pytest.mark.skipif(not (SHARED / "mirrord-schema.json").exists(),
                                  reason="../shared/mirrord (mirrord's schemas) is not beside this checkout")


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SHARED / name).read_text())


def test_the_committed_mirrord_config_is_the_rendered_one(render_minikube: Callable[..., Rendered]) -> None:
    committed = json.loads((ROOT / ".mirrord/order-processor.json").read_text())
    assert committed == render_minikube()[1]


@needs_shared
def test_the_mirrord_config_validates_against_mirrords_schema(render_minikube: Callable[..., Rendered]) -> None:
    config = render_minikube(mirrord_config_email_filter=r"^alice\+.*@metalbear\.com$")[1]
    jsonschema.Draft202012Validator(_schema("mirrord-schema.json")).validate(config)
    assert config["operator"] is True
    assert config["target"] == {"path": {"deployment": "order-processor"}, "namespace": "metalmart"}
    split = config["feature"]["split_queues"]["order-created"]
    assert split == {"queue_type": "Kafka", "message_filter": {"customer_email": r"^alice\+.*@metalbear\.com$"}}


@needs_shared
@pytest.mark.parametrize("model", ["current", "legacy"])
def test_splitting_resources_validate_and_share_the_queue_id(model: str,
                                                             render_minikube: Callable[..., Rendered]) -> None:
    docs = [d for d in render_minikube(queue_splitting_model=model)[0] if d["kind"].startswith("Mirrord")]
    schemas = {"MirrordPropertyList": "crd-schema-MirrordPropertyList-v1.json",
               "MirrordSplitConfig": "crd-schema-MirrordSplitConfig-v1.json",
               "MirrordKafkaClientConfig": "crd-schema-MirrordKafkaClientConfig-v1alpha.json",
               "MirrordKafkaTopicsConsumer": "crd-schema-MirrordKafkaTopicsConsumer-v1alpha.json"}
    for doc in docs:
        jsonschema.Draft202012Validator(_schema(schemas[doc["kind"]])).validate(doc)
    queue_id = render_minikube()[1]["feature"]["split_queues"]
    by_kind = {d["kind"]: d for d in docs}
    if model == "current":
        split = by_kind["MirrordSplitConfig"]["spec"]
        assert [q["id"] for q in split["queues"]] == list(queue_id)
        assert split["queues"][0]["clientConfig"] == by_kind["MirrordPropertyList"]["metadata"]["name"]
        names = [p["name"] for p in by_kind["MirrordPropertyList"]["spec"]["properties"]]
        assert "group.id" not in names, "the operator manages the group id"
    else:
        consumer = by_kind["MirrordKafkaTopicsConsumer"]
        assert [t["id"] for t in consumer["spec"]["topics"]] == list(queue_id)
        topic = consumer["spec"]["topics"][0]
        assert "groupIdSources" in topic and "applicationIdSources" not in topic
        assert topic["groupIdSources"][0]["directEnvVar"]["variable"] == "KAFKA_GROUP_ID"
        assert by_kind["MirrordKafkaClientConfig"]["metadata"]["namespace"] == "mirrord", "the operator's namespace"


def test_a_filter_mirrord_would_reject_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([*RUN, "render", "--out", str(tmp_path), "--email-filter", "("],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    # One line whichever checker refused it: mirrord's own where ./run test built it, else Python's re.
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.match(r"error: the e-mail filter '\(' is not a regex mirrord takes "
                    r"\((mirrord \d+\.\d+\.\d+'s own check|Python's re): .+\); e\.g\. ", done.stderr), done.stderr
    assert not (tmp_path / ".mirrord").exists()


def test_an_empty_filter_is_refused_because_it_would_match_nothing(render_minikube: Callable[..., Rendered]) -> None:
    with pytest.raises(UserError, match="is empty"):
        render_minikube(mirrord_config_email_filter="")
