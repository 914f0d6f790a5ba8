//! The Kubernetes Indexed Job in deploy/kubernetes: it is schema-valid for every Kubernetes version it
//! claims (PyPI's kubernetes-validate, in the venv scripts/test.sh makes, strict, offline) and passes the
//! checks a schema cannot make (Indexed with a per-index backoff, restartPolicy Never, only exit codes
//! redis-ferry has, N of --shard equal to completions), which do catch a broken manifest; and its own
//! args, with the index substituted as the kubelet does, split a real cluster's keys so that each key is
//! copied exactly once, whether each pod has a target of its own or all share one, and `report merge`
//! adds their reports up.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/redis-ferry-job.yaml");
const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kubernetes/check_manifest.py");
/// Every exit code redis-ferry has (src/exit.rs).
const EXIT_CODES: &str = "0,1,2,3,4,5,130";

/// The Python with kubernetes-validate: `FERRY_PYTHON` (scripts/test.sh sets it), else the venv it makes.
fn python() -> PathBuf {
    let python = std::env::var_os("FERRY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tests/bin/python"));
    assert!(
        python.exists(),
        "no {}: run scripts/test.sh, which makes the venv with kubernetes-validate",
        python.display()
    );
    python
}

/// Runs the checker on `manifest` with `args`; returns its exit code and output.
fn checker(manifest: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(python()).arg(CHECKER).arg(manifest).args(args).output().expect("run the checker");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn the_manifest_is_valid_and_the_checks_catch_a_broken_one() {
    let (code, text) = checker(Path::new(MANIFEST), &["validate", EXIT_CODES]);
    assert_eq!(code, Some(0), "{text}");
    let yaml = std::fs::read_to_string(MANIFEST).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, problem) in [
        ("completions: 3", "completions: 4", "N is not completions"),
        ("restartPolicy: Never", "restartPolicy: OnFailure", "restartPolicy is not Never"),
        ("values: [1, 3, 5, 130]", "values: [1, 3, 6, 130]", "exit codes redis-ferry does not have: [6]"),
        ("completionMode: Indexed", "completionMode: NonIndexed", "completionMode is not Indexed"),
        ("backoffLimitPerIndex: 4", "backoffLimit: 4", "no backoffLimitPerIndex"),
        ("  parallelism: 3", "  parallelism: 3\n  bogusField: 1", "Kubernetes 1.33.0"),
    ] {
        assert!(yaml.contains(from), "the manifest has no `{from}`");
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, yaml.replacen(from, to, 1)).unwrap();
        let (code, text) = checker(&broken, &["validate", EXIT_CODES]);
        assert_eq!(code, Some(1), "{from} -> {to} passed:\n{text}");
        assert!(text.contains(problem), "{from} -> {to}: expected `{problem}` in\n{text}");
    }
}

/// The container's args of pod `index`, as the kubelet makes them, with SOURCE and TARGET and the paths
/// under /state and the termination log moved to `source`, `target` and `dir`.
pub fn pod_args(index: u32, source: &str, target: &str, dir: &Path) -> (Vec<String>, u32) {
    let (code, text) = checker(Path::new(MANIFEST), &["args", &index.to_string()]);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the checker prints JSON");
    let completions = v["completions"].as_u64().unwrap() as u32;
    let mut args: Vec<String> =
        v["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(args[0], "copy");
    (args[1], args[2]) = (source.to_string(), target.to_string());
    for a in args.iter_mut().skip(3) {
        if let Some(name) = a.strip_prefix("/state/") {
            *a = path_str(&dir.join(name));
        } else if a == "/dev/termination-log" {
            *a = path_str(&dir.join(format!("report-{index}.json")));
        }
    }
    (args, completions)
}

/// Runs every pod of the manifest at once, pod `i` into `targets[i % targets.len()]`; returns their
/// outputs and report paths.
fn run_pods(source: &str, targets: &[String], dir: &Path) -> Vec<(std::process::Output, PathBuf)> {
    let (_, n) = pod_args(0, source, &targets[0], dir);
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let (args, _) = pod_args(i, source, &targets[i as usize % targets.len()], dir);
            (spawn_ferry(args), dir.join(format!("report-{i}.json")))
        })
        .collect();
    runs.into_iter().map(|(run, report)| (run.wait(), report)).collect()
}

#[test]
fn the_manifest_s_pods_copy_every_key_once() {
    let src = RedisCluster::new();
    let mut keys = src.fill_strings("k8s:", 3000);
    keys.extend(fill_hash_tag_keys(&mut src.conn()));
    let n = keys.len() as u64;
    let all = src.cluster_keys();
    let mut node = src.node_conns().remove(0);
    let dir = tempfile::tempdir().unwrap();

    // A target of its own per pod: each holds exactly its shard's keys.
    let targets: Vec<RedisServer> = (0..3).map(|_| RedisServer::new()).collect();
    let addrs: Vec<String> = targets.iter().map(|t| t.addr()).collect();
    let outs = run_pods(&src.addr(), &addrs, dir.path());
    assert_eq!(outs.len(), 3, "the manifest has 3 pods");
    let mut union = std::collections::BTreeSet::new();
    for (i, (out, _)) in outs.iter().enumerate() {
        assert_exit(out, 0);
        let held = all_keys(&mut targets[i].conn());
        let (from, to) = [(0, 5460), (5461, 10922), (10923, 16383)][i];
        for key in &held {
            let slot = key_slot(&mut node, key);
            assert!((from..=to).contains(&slot), "pod {i} copied {key:?} of slot {slot}");
            assert!(union.insert(key.clone()), "{key:?} was copied by two pods");
        }
        assert_eq!(summary(out).copied, held.len() as u64);
    }
    assert_eq!(union, all, "the pods' targets together are not the source");

    // All pods into one target: every key once, written once.
    let one = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let outs = run_pods(&src.addr(), &[one.addr()], dir.path());
    for (out, _) in &outs {
        assert_exit(out, 0);
    }
    let mut t = one.conn();
    assert_eq!(all_keys(&mut t), all);
    assert_eq!(keys_written(&mut t), n, "a key was written twice");
    let reports: Vec<String> = outs.iter().map(|(_, r)| path_str(r)).collect();
    let mut args = vec!["report".to_string(), "merge".to_string()];
    args.extend(reports);
    let merged = ferry(args);
    assert_exit(&merged, 0);
    let s = summary(&merged);
    assert_eq!((s.scanned, s.copied, s.failed), (n, n, 0), "{}", s.line);
    assert_eq!((s.get("shards"), s.get("missing")), (Some("3"), Some("0")), "{}", s.line);
}
