"""Validates fvol's Kubernetes manifests offline (fuse-tests/tests/deploy_manifests.rs).

Every document of a built-in kind goes through kubernetes-validate's bundled schemas in strict
mode (no unknown fields); a VolumeSnapshotClass, a CRD whose schema kubernetes-validate does
not carry, goes through volumesnapshotclass.schema.json. Any other kind is a failure: nothing
passes unchecked. Prints one line per document; exits 1 if any failed."""
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "1.37.0"


def main(paths):
    with open(os.path.join(HERE, "volumesnapshotclass.schema.json")) as f:
        snapshot_class = json.load(f)
    failed = 0
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for doc in docs:
            what = "%s %s/%s" % (path, doc.get("kind"), doc.get("metadata", {}).get("name"))
            try:
                if doc.get("kind") == "VolumeSnapshotClass":
                    jsonschema.validate(doc, snapshot_class)
                else:
                    kubernetes_validate.validate(doc, VERSION, strict=True)
                print("ok", what)
            except Exception as e:  # noqa: BLE001: any failure is reported and counted
                failed += 1
                print("FAILED", what, type(e).__name__, (str(e).splitlines() or [""])[0])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
