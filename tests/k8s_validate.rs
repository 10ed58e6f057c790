//! The manifests of `servelab export k8s` against the published Kubernetes API schemas, with
//! `kubernetes-validate --strict` (PyPI, pinned in scripts/setup-kubernetes-validate.sh, which scripts/test.sh
//! runs). Without it the test is reported as ignored with the reason, never as passed; under `CI` it fails.

use std::path::PathBuf;
use std::process::Command;

const SERVELAB: &str = env!("CARGO_BIN_EXE_servelab");

fn validator() -> Result<PathBuf, String> {
    let venv = match std::env::var_os("SERVELAB_K8S_VALIDATE_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/servelab/kubernetes-validate-1.37.0")
        }
    };
    let bin = venv.join("bin/kubernetes-validate");
    if bin.exists() {
        return Ok(bin);
    }
    Err(format!("{} is missing; run scripts/setup-kubernetes-validate.sh (scripts/test.sh does)", bin.display()))
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let found = validator();
    if let Err(why) = &found
        && !args.list
    {
        eprintln!("kubernetes-validate test not run: {why}");
    }
    let ignore = found.is_err() && std::env::var_os("CI").is_none();
    let trial = libtest_mimic::Trial::test("exported_manifests_pass_kubernetes_validate", move || {
        let bin = found?;
        validate(&bin)
    })
    .with_ignored_flag(ignore);
    libtest_mimic::run(&args, vec![trial]).exit();
}

fn validate(bin: &std::path::Path) -> Result<(), libtest_mimic::Failed> {
    let tmp = tempfile::tempdir()?;
    let spec = "name: tp2\nengine:\n  kind: vllm\n  model: m\n  args:\n    tensor-parallel-size: 2\n    max-model-len: \"{{ len }}\"\ngrid:\n  len: [512, 1024, 2048]\n";
    std::fs::write(tmp.path().join("spec.yaml"), spec)?;
    let out = Command::new(SERVELAB)
        .current_dir(tmp.path())
        .args(["export", "k8s", "spec.yaml", "--shards", "2", "--dir", "k8s", "--namespace", "lab"])
        .output()?;
    if !out.status.success() {
        return Err(format!("export failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let files = ["spec-configmap.yaml", "shards-job.yaml", "merge-job.yaml"].map(|f| tmp.path().join("k8s").join(f));
    let check = Command::new(bin).arg("--strict").args(&files).output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    if !check.status.success() || said.matches("passed").count() != 3 {
        return Err(format!("kubernetes-validate --strict: {said}").into());
    }
    Ok(())
}
