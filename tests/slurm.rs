//! `servelab export slurm` on a real single-node Slurm cluster (scripts/slurm-local.sh: Debian's slurm-wlm and
//! munge, a fake GRES gpu:2): the exported job array runs two shards of a spec against the zero endpoint,
//! one shard is cancelled after its first point, the `afterany` merge job still runs and says what is
//! missing; `submit.sh I` re-runs that shard (it resumes its folder) and merges again, and the merged folder
//! holds every point once and passes `report --check`.
//!
//! The cluster is brought up only where SERVELAB_SLURM_LOCAL=1 says this machine may be reconfigured (.ci/run
//! sets it, as root); elsewhere, or where the cluster cannot be brought up, the test is reported as ignored
//! with the reason, never as passed. README's test command never starts daemons unasked.

mod common;
use common::{ROOT, ok_points};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");
const SERVELAB: &str = env!("CARGO_BIN_EXE_servelab");

fn script(action: &str) -> Result<(), String> {
    let out = Command::new(Path::new(ROOT).join("scripts/slurm-local.sh"))
        .arg(action)
        .output()
        .map_err(|e| format!("scripts/slurm-local.sh {action}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("scripts/slurm-local.sh {action} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

/// Why the cluster cannot be used here, or None once it is up.
fn cluster() -> Option<String> {
    if std::env::var_os("SERVELAB_SLURM_LOCAL").is_none_or(|v| v != "1") {
        return Some(
            "SERVELAB_SLURM_LOCAL=1 is not set: this test configures and starts Slurm daemons as root \
             (scripts/slurm-local.sh install && up), so it runs only where that is wanted, as in .ci/run"
                .to_owned(),
        );
    }
    script("up").err()
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let why = if args.list { None } else { cluster() };
    if let Some(why) = &why {
        eprintln!("Slurm test not run: {why}");
    }
    let trial = libtest_mimic::Trial::test("a_job_array_and_its_merge_with_a_cancelled_shard_rerun", || {
        array_and_merge();
        Ok(())
    })
    .with_ignored_flag(why.is_some());
    let up = !args.list && why.is_none();
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    if up && let Err(e) = script("down") {
        eprintln!("{e}");
    }
    conclusion.exit();
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Job ids from submit.sh's line "shards: job A; merge: job B; …".
fn submit(dir: &Path, shards: &[&str]) -> Vec<String> {
    let line = sh(Command::new(dir.join("submit.sh")).args(shards));
    line.split("job ").skip(1).map(|s| s.split(';').next().unwrap().trim().to_owned()).collect()
}

fn wait_for(jobs: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !sh(Command::new("squeue").args(["-h", "-j", &jobs.join(",")])).trim().is_empty() {
        assert!(Instant::now() < deadline, "jobs {jobs:?} did not finish in 4 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A shard that has committed a point and has points left, once one does.
fn cancel_a_shard_midway(runs: &Path, jobs: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for i in 0..2 {
            let d = runs.join(format!("shardy/shard-{i}-of-2"));
            let Ok(plan) = std::fs::read(d.join("plan.json")) else { continue };
            let plan: serde_json::Value = serde_json::from_slice(&plan).unwrap();
            let total: usize =
                plan["groups"].as_array().unwrap().iter().map(|g| g["points"].as_array().unwrap().len()).sum();
            let done = if d.join("journal.jsonl").exists() { ok_points(&d).len() } else { 0 };
            if done >= 1 && done < total {
                sh(Command::new("scancel").arg(format!("{}_{i}", jobs[0])));
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no shard was caught midway");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn array_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_ports(2);
    // Three servers of two points each; 150 ms a token, so a shard runs for seconds and can be caught midway.
    let spec = format!(
        "name: shardy\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"150000\", \"--start-delay-ms\", \"{{{{ delay }}}}\"]\n  port: {port}\n  gpus: 1\n  ready_timeout: 20s\n  stop_timeout: 2s\ngrid:\n  delay: [0, 1, 2]\n  concurrency: [1, 2]\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: 4\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n"
    );
    let spec_path = tmp.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let (runs, dir): (PathBuf, PathBuf) = (tmp.path().join("runs"), tmp.path().join("cluster"));
    sh(Command::new(SERVELAB).current_dir(tmp.path()).args(["export", "slurm", "spec.yaml", "--shards", "2"]).args([
        "--dir",
        dir.to_str().unwrap(),
        "--shared",
        runs.to_str().unwrap(),
        "--servelab",
        SERVELAB,
        "--cpus-per-task",
        "1",
    ]));
    let jobs = submit(&dir, &[]);
    let cancelled = cancel_a_shard_midway(&runs, &jobs);
    wait_for(&jobs);
    let merged = runs.join("shardy/merged");
    let log = std::fs::read_to_string(runs.join("shardy/logs/merge.out")).unwrap();
    assert!(log.contains("failed points") || log.contains("missing points"), "the merge said nothing missing: {log}");
    assert!(ok_points(&merged).len() < 6, "the cancelled shard's points cannot all be there");
    // Re-run only the cancelled shard: it resumes its folder, and the merge job runs again.
    let again = submit(&dir, &[&cancelled.to_string()]);
    wait_for(&again);
    let log = std::fs::read_to_string(runs.join("shardy/logs/merge.out")).unwrap();
    assert!(!log.contains("missing") && !log.contains("failed points"), "{log}");
    let points = ok_points(&merged);
    let unique: std::collections::BTreeSet<&String> = points.iter().collect();
    assert_eq!((points.len(), unique.len()), (6, 6), "every point once: {points:?}");
    let check = Command::new(SERVELAB).args(["report", "--check", merged.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
