"""Validates every Kubernetes object under a directory against the Kubernetes OpenAPI schemas
bundled in `kubernetes-validate` (strict: unknown fields are errors), for each version given.

    python k8s_validate.py --versions 1.29.0,1.37.0 examples/k8s

Prints one record per document and version,
    k8s=object file=<path> doc=<index> kind=<kind> name=<name> namespace=<ns> version=<v> ok=1
(ok=0 is followed by an indented `error:` line), one per Helm values file (`values*.yaml`,
which is not a Kubernetes object: it must parse to a mapping),
    k8s=helm-values file=<path> ok=1 keys=<top-level keys>
and a summary `k8s=summary objects=<n> failures=<n>`. Exits 1 on any failure.
"""

import argparse
import pathlib
import sys

import yaml
from kubernetes_validate import utils as kv


def record(**fields):
    print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", required=True, help="comma-separated Kubernetes versions")
    parser.add_argument("root", type=pathlib.Path)
    args = parser.parse_args()
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]

    files = sorted(p for p in args.root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        print(f"no YAML files under {args.root}", file=sys.stderr)
        return 1
    objects = 0
    failures = 0
    for path in files:
        rel = path.relative_to(args.root)
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            failures += 1
            record(k8s="parse", file=rel, ok=0)
            print(f"  error: {' '.join(str(e).split())}")
            continue
        if path.name.startswith("values"):
            ok = len(docs) == 1 and isinstance(docs[0], dict)
            failures += 0 if ok else 1
            keys = ",".join(sorted(docs[0])) if ok else "-"
            record(k8s="helm-values", file=rel, ok=int(ok), keys=keys)
            continue
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                failures += 1
                record(k8s="object", file=rel, doc=index, kind="-", name="-", version="-", ok=0)
                print("  error: not a Kubernetes object (no apiVersion/kind)")
                continue
            # A Volcano Job (a CRD, no schema here): each task's pod template is checked as
            # the Pod it becomes, named <job>/<task>.
            if doc.get("apiVersion") == "batch.volcano.sh/v1alpha1" and doc.get("kind") == "Job":
                job = (doc.get("metadata") or {}).get("name", "-")
                for task in (doc.get("spec") or {}).get("tasks") or []:
                    template = task.get("template") or {}
                    pod = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": dict(template.get("metadata") or {}, name=f"{job}/{task.get('name', '-')}"),
                           "spec": template.get("spec") or {}}
                    docs.append(pod)
                continue
            meta = doc.get("metadata") or {}
            for version in versions:
                objects += 1
                fields = dict(
                    k8s="object",
                    file=rel,
                    doc=index,
                    kind=doc["kind"],
                    name=meta.get("name", "-"),
                    namespace=meta.get("namespace", "-"),
                    version=version,
                )
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    failures += 1
                    where = ".".join(str(p) for p in e.path) or "(top)"
                    record(**fields, ok=0)
                    print(f"  error: at {where}: {' '.join(e.message.split())}")
                    continue
                except (kv.SchemaNotFoundError, kv.VersionNotSupportedError,
                        kv.InvalidSchemaError) as e:
                    failures += 1
                    record(**fields, ok=0)
                    print(f"  error: {e.message}")
                    continue
                record(**fields, ok=1)
    record(k8s="summary", objects=objects, failures=failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
