//! Shards of a run and their merge (`run --shard I/N`, `servelab merge`), against a fake engine: the
//! in-process fake (`run::fake`, synthetic deterministic records) shows that shards 0/2 and 1/2 merged render
//! the same reports as one whole run; `servelab-zero-endpoint` as a `kind: command` engine drives the real
//! CLI through sharding, resuming a shard in place, slots inside a shard, the merge's refusals and
//! `report --check` on the merged folder. Figures are never claimed from either.

use crate::common;
use common::ok_points;
use servelab::run::{self, RunOptions, Seam};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");
const SERVELAB: &str = env!("CARGO_BIN_EXE_servelab");

/// Three server groups (start delay 0, 1, 2 ms) of two points each against the zero endpoint.
fn spec(port: u16, extra: &str) -> String {
    format!(
        "name: shardy\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--start-delay-ms\", \"{{{{ delay }}}}\"]\n  port: {port}\n  ready_timeout: 20s\n  stop_timeout: 1s\ngrid:\n  delay: [0, 1, 2]\n  concurrency: [1, 2]\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: 4\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n{extra}"
    )
}

struct Case {
    tmp: tempfile::TempDir,
    spec: PathBuf,
}

impl Case {
    fn new(text: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("spec.yaml");
        std::fs::write(&spec, text).unwrap();
        Case { tmp, spec }
    }

    fn out(&self) -> PathBuf {
        self.tmp.path().join("out")
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.out().join("shardy").join(id)
    }

    fn servelab(&self, args: &[&str]) -> Output {
        let out = Command::new(SERVELAB).args(args).current_dir(self.tmp.path()).output().unwrap();
        eprintln!("servelab {}:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        out
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["run", self.spec.to_str().unwrap()];
        let out = self.out();
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        self.servelab(&args)
    }

    /// The in-process fake: the whole plan, or one shard of it, into run folder `id`.
    fn fake(&self, id: &str, shard: Option<&str>) {
        let loaded = servelab::spec::load_file(&self.spec, &[]).unwrap();
        let plan = servelab::plan::build_located(&loaded).unwrap();
        let (plan, of) = match shard {
            Some(s) => {
                let (p, of) = servelab::shard::shard_plan(&loaded.spec, &plan, s.parse().unwrap()).unwrap();
                (p, Some(of))
            }
            None => (plan, None),
        };
        let opts = RunOptions { shard: of, ..RunOptions::serial(self.out(), Some(id.to_owned())) };
        let seam = Seam { fake: true, fake_delay: Duration::from_millis(1), interrupt_after: None };
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(run::execute_on(&loaded, &plan, &opts, &AtomicBool::new(false), &seam)).unwrap();
    }
}

/// Every derived file of a folder (what `derive` writes: not the raw records, spec, plan or manifest).
fn derived(dir: &Path) -> Vec<(String, String)> {
    let raw =
        ["journal.jsonl", "points.jsonl", "requests.jsonl", "samples.jsonl", "spec.yaml", "plan.json", "manifest.json"];
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_file() && !raw.contains(&name.as_str()) {
            out.push((name, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// Provenance a report may quote (run id, times) taken out, so two runs of the same records compare.
fn without_provenance(text: &str, whole: &Path, merged: &Path) -> String {
    let ids = [whole, merged].map(|d| d.file_name().unwrap().to_string_lossy().into_owned());
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT[0-9:.]+[+-Z][0-9:]*").unwrap();
    let text = text.replace(&format!("`{}`", ids[0]), "`RUN`").replace(&format!("`{}`", ids[1]), "`RUN`");
    time.replace_all(&text, "TIME").into_owned()
}

#[test]
fn two_shards_merged_hold_the_whole_runs_points_and_render_its_reports() {
    let case = Case::new(&spec(common::free_ports(1), ""));
    case.fake("whole", None);
    case.fake("s0", Some("0/2"));
    case.fake("s1", Some("1/2"));
    let (s0, s1) = (ok_points(&case.dir("s0")), ok_points(&case.dir("s1")));
    assert!(!s0.is_empty() && !s1.is_empty(), "each shard measured something: {s0:?} {s1:?}");
    assert!(s0.iter().all(|p| !s1.contains(p)), "no point in both shards");
    let merged = case.dir("merged");
    let p = servelab::shard::merge::prepare(&[case.dir("s1"), case.dir("s0")], None).unwrap();
    assert!(p.complete(), "{:?} {:?}", p.missing_shards, p.missing_points);
    p.write(&merged).unwrap();
    let whole = ok_points(&case.dir("whole"));
    assert_eq!(whole.len(), whole.iter().collect::<BTreeSet<_>>().len(), "no duplicate in the whole run");
    assert_eq!(ok_points(&merged), whole, "the merged folder holds exactly the whole run's points");
    let (a, b) = (derived(&case.dir("whole")), derived(&merged));
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), b.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let (x, y) =
            (without_provenance(x, &case.dir("whole"), &merged), without_provenance(y, &case.dir("whole"), &merged));
        assert!(x == y, "{name} differs between the whole run and the merge:\n{x}\n---\n{y}");
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_killed_shard_resumes_in_place_with_slots_and_the_merge_says_what_is_missing() {
    // Shard 1 on two slots listens on port + 2 and port + 3 (its ports start 1 × 2 slots above the spec's).
    let port = common::free_ports(4);
    let case = Case::new(&spec(port, ""));
    let (s0, s1) = (case.dir("shard-0-of-2"), case.dir("shard-1-of-2"));
    // Shard 0 is killed (SIGKILL: no graceful stop) once its first point is committed.
    let spec_path = case.spec.to_str().unwrap().to_owned();
    let out = case.out();
    let mut child = Command::new(SERVELAB)
        .args(["run", &spec_path, "--out", out.to_str().unwrap(), "--shard", "0/2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !s0.join("journal.jsonl").exists() || ok_points(&s0).is_empty() {
        assert!(std::time::Instant::now() < deadline, "shard 0 never committed a point");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Shard 1 on two slots.
    assert_eq!(code(&case.run(&["--shard", "1/2", "--parallel", "2"])), 0);
    let m1: serde_json::Value = serde_json::from_slice(&std::fs::read(s1.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m1["shard"]["index"].as_u64(), m1["shard"]["count"].as_u64()), (Some(1), Some(2)));
    // A merge now says what is missing, writes what there is, and exits 3.
    let merged = case.dir("merged");
    let partial = case.servelab(&["merge", "--out", merged.to_str().unwrap(), s1.to_str().unwrap()]);
    assert_eq!(code(&partial), 3);
    assert!(stderr(&partial).contains("missing shards: 0"), "{}", stderr(&partial));
    // The folder of shard 0 resumes only as shard 0.
    let wrong = case.run(&["--shard", "1/2", "--resume", s0.to_str().unwrap()]);
    assert_eq!(code(&wrong), 2);
    assert!(stderr(&wrong).contains("resume it with --shard 0/2"), "{}", stderr(&wrong));
    assert_eq!(code(&case.run(&["--shard", "0/2", "--resume", s0.to_str().unwrap()])), 0);
    let before = ok_points(&s0);
    assert_eq!(before.len(), before.iter().collect::<BTreeSet<_>>().len(), "the resume measured nothing twice");
    // Merged (given in any order): every point once, every report as `servelab report` renders it.
    let full = case.servelab(&["merge", "--out", merged.to_str().unwrap(), s1.to_str().unwrap(), s0.to_str().unwrap()]);
    assert_eq!(code(&full), 0, "{}", stderr(&full));
    let points = ok_points(&merged);
    assert_eq!(points.len(), 6);
    assert_eq!(
        points,
        [ok_points(&s0), ok_points(&s1)].concat().into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>()
    );
    let written = derived(&merged);
    assert_eq!(code(&case.servelab(&["report", merged.to_str().unwrap()])), 0);
    assert_eq!(derived(&merged), written, "the merge rendered what `servelab report` renders");
    assert_eq!(code(&case.servelab(&["report", "--check", merged.to_str().unwrap()])), 0);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(merged.join("manifest.json")).unwrap()).unwrap();
    let shards: Vec<u64> = m["shards"].as_array().unwrap().iter().map(|s| s["index"].as_u64().unwrap()).collect();
    assert_eq!(shards, [0, 1], "each shard's environment, in shard order");
    common::assert_nothing_left_in(&s1, port);
}

#[test]
fn a_point_measured_in_two_runs_is_refused_unless_prefer_says_which_wins() {
    let case = Case::new(&spec(common::free_ports(1), ""));
    case.fake("whole", None);
    case.fake("s0", Some("0/2"));
    let merged = case.dir("merged");
    let (m, w, s0) = (merged.to_str().unwrap(), case.dir("whole"), case.dir("s0"));
    let twice = case.servelab(&["merge", "--out", m, w.to_str().unwrap(), s0.to_str().unwrap()]);
    assert_eq!(code(&twice), 2);
    assert!(stderr(&twice).contains("--prefer newest"), "{}", stderr(&twice));
    assert!(!merged.exists(), "a refused merge writes nothing");
    for prefer in ["newest", s0.to_str().unwrap()] {
        let o = case.servelab(&["merge", "--out", m, "--prefer", prefer, w.to_str().unwrap(), s0.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(ok_points(&merged), ok_points(&w));
    }
    // Another spec's shard is refused.
    let other = Case::new(&spec(common::free_ports(1), "repeats: 2\n"));
    other.fake("s1", Some("1/2"));
    let o = case.servelab(&["merge", "--out", m, s0.to_str().unwrap(), other.dir("s1").to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("differ in spec"), "{}", stderr(&o));
}

#[test]
fn tune_and_search_specs_are_refused_with_shard() {
    for (spec, key) in [("experiments/cpu/tune.yaml", "tune"), ("experiments/h200/rate_search.yaml", "search")] {
        let path = Path::new(common::ROOT).join(spec);
        let o = Command::new(SERVELAB).args(["run", path.to_str().unwrap(), "--shard", "0/2"]).output().unwrap();
        assert_eq!(code(&o), 2, "{spec}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("`{key}:`")) && stderr(&o).contains("sequential"), "{}", stderr(&o));
    }
}
