#!/usr/bin/env python3
"""Checks deploy/kubernetes/redis-ferry-job.yaml, for tests/kubernetes (run by `cargo test` with the venv that
scripts/test.sh makes, which has PyPI's kubernetes-validate and its schemas: it works offline).

usage: check_manifest.py MANIFEST validate EXIT_CODES   schema-valid for every supported version, strict, and the
                                                      checks a schema cannot make; EXIT_CODES is the comma list
                                                      of codes redis-ferry has. Prints one line per problem and
                                                      exits 1 if there is any.
       check_manifest.py MANIFEST args INDEX          the container's args for pod INDEX as JSON, with $(VAR)
                                                      replaced the way the kubelet does (from the container's
                                                      env; JOB_COMPLETION_INDEX is INDEX), for the test to run.
"""
import json
import re
import sys

import kubernetes_validate
import yaml

# Kubernetes versions the manifest supports: backoffLimitPerIndex is GA from 1.33.
VERSIONS = ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]


def job(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    jobs = [d for d in docs if d.get("kind") == "Job"]
    if len(jobs) != 1:
        sys.exit(f"{path}: expected one Job, found {len(jobs)}")
    return docs, jobs[0]


def container(j):
    containers = j["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "redis-ferry")


def expand(text, env):
    """$(VAR) as the kubelet expands it in args: from the container's env, $$ for a literal $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def validate(path, codes):
    problems = []
    docs, j = job(path)
    for version in VERSIONS:
        for d in docs:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"Kubernetes {version}: {e.message} at {'.'.join(map(str, e.path))}")
    spec = j["spec"]
    pod = spec["template"]["spec"]
    if spec.get("completionMode") != "Indexed":
        problems.append("completionMode is not Indexed")
    if "backoffLimitPerIndex" not in spec:
        problems.append("no backoffLimitPerIndex: a failed shard would count against the whole Job")
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy is not Never (a podFailurePolicy needs it)")
    policy_codes = set()
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        policy_codes |= set(rule.get("onExitCodes", {}).get("values", []))
    unknown = sorted(policy_codes - set(codes))
    if unknown:
        problems.append(f"podFailurePolicy names exit codes redis-ferry does not have: {unknown}")
    never = [r for r in spec["podFailurePolicy"]["rules"] if 2 in r.get("onExitCodes", {}).get("values", [])]
    if not never or never[0]["action"] not in ("FailJob", "FailIndex"):
        problems.append("exit 2 (bad input) is retried")
    args = container(j)["args"]
    shard = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--shard"]
    if len(shard) != 1:
        problems.append("the args give no --shard")
    else:
        n = shard[0].rsplit("/", 1)[-1]
        if not n.isdigit() or int(n) != spec.get("completions"):
            problems.append(f"--shard {shard[0]}: N is not completions ({spec.get('completions')})")
        if spec.get("parallelism") not in (None, spec.get("completions")):
            problems.append("parallelism differs from completions: some shards would wait for others")
    if "--report" in args and args[args.index("--report") + 1] != container(j).get(
            "terminationMessagePath", "/dev/termination-log"):
        problems.append("--report is not the terminationMessagePath")
    for p in problems:
        print(p)
    return 1 if problems else 0


def args_of(path, index):
    _, j = job(path)
    c = container(j)
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    env["JOB_COMPLETION_INDEX"] = str(index)
    print(json.dumps({"args": [expand(a, env) for a in c["args"]], "completions": j["spec"]["completions"]}))
    return 0


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("validate", "args"):
        sys.exit(__doc__)
    path, verb, arg = sys.argv[1:]
    if verb == "validate":
        return validate(path, [int(c) for c in arg.split(",")])
    return args_of(path, int(arg))


if __name__ == "__main__":
    sys.exit(main())
