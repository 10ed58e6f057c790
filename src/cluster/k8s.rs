//! `servelab export k8s`: the spec as a ConfigMap, an Indexed Job (completions N, `JOB_COMPLETION_INDEX` is
//! the shard) whose pods mount a shared ReadWriteMany claim, a merge Job, and `submit.sh`, which applies the
//! shards' Job, waits until it is complete or failed (Kubernetes has no `afterany`), then applies the merge.
//! Manifests are built as values and serialized, so no spec text or flag is pasted into YAML.

use super::{ExportError, K8sArgs, Resources, sh_quote, spec_args};
use serde_json::{Value, json};
use std::path::PathBuf;

/// A DNS-1123 label from the spec's name: lower case, `-` for anything else, at most 40 characters (the Job's
/// pods add an index and a hash to it).
pub fn label(name: &str) -> String {
    let mapped: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let trimmed: String = mapped.trim_matches('-').chars().take(40).collect();
    let out = trimmed.trim_end_matches('-').to_owned();
    if out.is_empty() { "run".to_owned() } else { out }
}

/// The names of the objects the export creates.
pub struct Names {
    pub config: String,
    pub shards: String,
    pub merge: String,
}

pub fn names(r: &Resources) -> Names {
    let l = label(&r.name);
    Names {
        config: format!("servelab-{l}-spec"),
        shards: format!("servelab-{l}-shards"),
        merge: format!("servelab-{l}-merge"),
    }
}

fn metadata(name: &str, a: &K8sArgs, r: &Resources) -> Value {
    let mut m = json!({
        "name": name,
        "labels": { "app.kubernetes.io/name": "servelab", "servelab.dev/experiment": label(&r.name) },
    });
    if let Some(ns) = &a.namespace {
        m["namespace"] = ns.as_str().into();
    }
    m
}

const SPEC_MOUNT: &str = "/etc/servelab";

fn pod(a: &K8sArgs, r: &Resources, container: &str, script: String, gpus: u32, cpus: u32) -> Value {
    let n = names(r);
    let mut limits = json!({ "cpu": cpus.to_string() });
    if gpus > 0 {
        limits["nvidia.com/gpu"] = gpus.to_string().into();
    }
    json!({
        "metadata": { "labels": { "app.kubernetes.io/name": "servelab", "servelab.dev/experiment": label(&r.name) } },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": container,
                "image": a.image,
                "command": ["/bin/sh", "-c", script],
                "resources": { "requests": { "cpu": cpus.to_string() }, "limits": limits },
                "volumeMounts": [
                    { "name": "shared", "mountPath": a.mount },
                    { "name": "spec", "mountPath": SPEC_MOUNT, "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "shared", "persistentVolumeClaim": { "claimName": a.pvc } },
                { "name": "spec", "configMap": { "name": n.config } },
            ],
        },
    })
}

fn shard_script(a: &K8sArgs, r: &Resources) -> String {
    let (n, name) = (r.shards.len(), &r.name);
    let servelab = sh_quote(&a.common.servelab);
    let run_args = spec_args(&format!("{SPEC_MOUNT}/spec.yaml"), &a.common.set);
    format!(
        "set -eu
# The Job's index is the shard; a shard whose run folder exists is resumed in place.
I=\"$JOB_COMPLETION_INDEX\"
RUNS={runs}
DIR=\"$RUNS/{name}/shard-$I-of-{n}\"
if [ -f \"$DIR/manifest.json\" ] || [ -f \"$DIR/manifest.json.xz\" ]; then
  exec {servelab} run {run_args} --shard \"$I/{n}\" --resume \"$DIR\"
fi
rm -rf \"$DIR\"
exec {servelab} run {run_args} --shard \"$I/{n}\" --out \"$RUNS\" --run-id \"shard-$I-of-{n}\"
",
        runs = sh_quote(&a.mount)
    )
}

/// The three manifests, as values (tests read them back).
pub fn manifests(a: &K8sArgs, r: &Resources, spec_text: &str) -> (Value, Value, Value) {
    let n = names(r);
    let count = r.shards.len();
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(&n.config, a, r),
        "data": { "spec.yaml": spec_text },
    });
    let shards = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(&n.shards, a, r),
        "spec": {
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": count,
            // Each retry resumes its shard's folder, so a retry costs only what that shard had left.
            "backoffLimit": count,
            "activeDeadlineSeconds": r.minutes * 60,
            "template": pod(a, r, "shard", shard_script(a, r), r.gpus, r.cpus),
        },
    });
    let rerun = "re-run with submit.sh (each shard resumes its folder)";
    let body = super::slurm::merge_body(&a.common.servelab, &a.mount, &r.name, count, rerun);
    let merge = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(&n.merge, a, r),
        "spec": { "backoffLimit": 0, "template": pod(a, r, "merge", format!("set -u\n{body}"), 0, 1) },
    });
    (config, shards, merge)
}

fn yaml(v: &Value) -> Result<Vec<u8>, ExportError> {
    let mut s = String::from("# Written by `servelab export k8s`; see docs/kubernetes.md.\n");
    s.push_str(&serde_saphyr::to_string(v).map_err(|e| ExportError::Yaml(e.to_string()))?);
    Ok(s.into_bytes())
}

pub fn files(a: &K8sArgs, r: &Resources, spec_text: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, ExportError> {
    let (config, shards, merge) = manifests(a, r, spec_text);
    Ok(vec![
        (PathBuf::from("spec-configmap.yaml"), yaml(&config)?),
        (PathBuf::from("shards-job.yaml"), yaml(&shards)?),
        (PathBuf::from("merge-job.yaml"), yaml(&merge)?),
        (PathBuf::from("submit.sh"), submit(a, r).into_bytes()),
    ])
}

fn submit(a: &K8sArgs, r: &Resources) -> String {
    let n = names(r);
    let ns = a.namespace.as_deref().map(|ns| format!("-n {}", sh_quote(ns))).unwrap_or_default();
    format!(
        "#!/bin/bash
# Applies the spec and the shards' Indexed Job, waits until it is complete or failed, then runs the merge Job
# (which says which shards are missing). Run it again to re-run what failed: earlier Jobs are replaced, and
# each shard resumes its run folder on the shared volume, measuring only what it lacks.
set -euo pipefail
here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"
kubectl {ns} delete --ignore-not-found job/{shards} job/{merge}
kubectl {ns} apply -f \"$here/spec-configmap.yaml\" -f \"$here/shards-job.yaml\"
until kubectl {ns} get job/{shards} -o jsonpath='{{.status.conditions[*].type}}' | grep -Eq 'Complete|Failed'; do
  sleep 30
done
kubectl {ns} apply -f \"$here/merge-job.yaml\"
kubectl {ns} wait --for=condition=complete --timeout=1h job/{merge} || kubectl {ns} logs job/{merge}
",
        shards = n.shards,
        merge = n.merge
    )
}
