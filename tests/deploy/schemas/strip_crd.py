"""Turn a CustomResourceDefinition into the JSON schema tests/deploy validates manifests with.

    python tests/deploy/schemas/strip_crd.py CRD.yaml VERSION > KIND-GROUP-VERSION.json

Keeps the openAPIV3Schema of the served VERSION, the schema the API server enforces, and drops
its prose (every `description`), which is most of its size. See README.md for the sources.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strip(node: Any) -> Any:
    """The schema without descriptions; a property that is *named* description stays."""
    if isinstance(node, list):
        return [strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: strip(sub) for name, sub in value.items()}
        else:
            out[key] = strip(value)
    return out


def main(crd_path: str, version: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (served,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = strip(served["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["x-crd"] = {"apiVersion": f"{group}/{version}", "kind": kind}
    json.dump(schema, sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
