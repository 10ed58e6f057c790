//! One scenario table for the executor's control flow, run against both sides of the seam: the in-process
//! fake (`run::fake`: no process, no port, milliseconds) and the real executor with `servelab-zero-endpoint`
//! as a `kind: command` engine. Each row is one spec (the fake reads the endpoint's fault flags from the
//! argv), the invocations it takes, and what the run folder must hold afterwards — the same for both sides.
//! The row with two groups in flight under one journal writer runs on two slots (`--parallel 2`: a port of
//! its own per slot) on both sides. Figures are never claimed from either side.

mod common;
use common::jsonl;
use servelab::run::{self, Outcome, RunOptions, Seam};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Fake,
    Real,
}

/// Rows on two slots use port and port + 1.
fn free_port() -> u16 {
    common::free_ports(3)
}

/// A spec against the zero endpoint; `faults` are extra endpoint flags (may use grid variables), `rest` the
/// grid, load and anything else.
fn spec(port: u16, faults: &str, rest: &str) -> String {
    format!(
        "name: s\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\"{faults}]\n  port: {port}\n  ready_timeout: 20s\n  stop_timeout: 1s\n{rest}\nmeasure: {{memory: procfs}}\n"
    )
}

fn closed(levels: &str, requests: u32, extra: &str) -> String {
    format!(
        "grid:\n  concurrency: {levels}\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: {requests}\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\n{extra}"
    )
}

/// One invocation of `run` (or `tune`) on the row's spec.
#[derive(Clone, Default)]
struct Call {
    resume: bool,
    fail_fast: bool,
    max_starts: Option<usize>,
    interrupt_after: Option<usize>,
    slots: usize,
}

struct Case {
    _tmp: tempfile::TempDir,
    spec: PathBuf,
    out: PathBuf,
    side: Side,
}

impl Case {
    fn new(side: Side, text: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("spec.yaml");
        std::fs::write(&spec, text).unwrap();
        let out = tmp.path().join("out");
        Case { _tmp: tmp, spec, out, side }
    }

    fn dir(&self) -> PathBuf {
        self.out.join("s").join("r")
    }

    fn call(&self, c: &Call) -> Result<Outcome, String> {
        let args: Vec<String> = Vec::new();
        let loaded = servelab::spec::load_file(&self.spec, &args).map_err(|e| e.to_string())?;
        let plan = servelab::plan::build_located(&loaded).map_err(|e| e.to_string())?;
        let opts = RunOptions {
            out_root: self.out.clone(),
            run_id: (!c.resume).then(|| "r".to_owned()),
            resume: c.resume.then(|| self.dir()),
            force: false,
            fail_fast: c.fail_fast,
            max_starts: c.max_starts,
            host: if c.slots > 1 {
                servelab::plan::slots::Host {
                    lend: servelab::plan::slots::Lend::Parallel(c.slots),
                    distance: Vec::new(),
                    nodes: vec![vec![0]],
                    max_parallel: None,
                }
            } else {
                servelab::plan::slots::Host::serial()
            },
            shard: None,
        };
        let seam = Seam {
            fake: self.side == Side::Fake,
            fake_delay: Duration::from_millis(if c.slots > 1 { 20 } else { 1 }),
            interrupt_after: c.interrupt_after,
        };
        let interrupted = AtomicBool::new(false);
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(run::execute_on(&loaded, &plan, &opts, &interrupted, &seam)).map_err(|e| e.to_string())
    }
}

/// How an invocation ended, as the exit code would say it.
fn ending(o: &Result<Outcome, String>) -> &'static str {
    match o {
        Err(e) => {
            eprintln!("the run ended with an error: {e}");
            "error"
        }
        Ok(o) if o.interrupted => "interrupted",
        Ok(o) if o.failed_servers() + o.failed_points() > 0 => "failed",
        Ok(_) => "ok",
    }
}

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("journal.jsonl"))
}

fn events<'a>(j: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    j.iter().filter(|e| e["event"] == kind).collect()
}

/// (status, attempt) of every committed point, in journal order.
fn done(dir: &Path) -> Vec<(String, u64)> {
    events(&journal(dir), "point_done")
        .iter()
        .map(|e| (e["status"].as_str().unwrap().to_owned(), e["attempt"].as_u64().unwrap()))
        .collect()
}

fn oks(dir: &Path) -> usize {
    done(dir).iter().filter(|(s, _)| s == "ok").count()
}

/// Measured requests per committed (point, attempt), read as `report` reads them.
fn committed_requests(dir: &Path) -> BTreeMap<(String, u64), usize> {
    let committed: Vec<(String, u64)> = events(&journal(dir), "point_done")
        .iter()
        .map(|e| (e["point"].as_str().unwrap().to_owned(), e["attempt"].as_u64().unwrap()))
        .collect();
    let mut n = BTreeMap::new();
    for r in jsonl(&dir.join("requests.jsonl")) {
        let key = (r["point"].as_str().unwrap().to_owned(), r["attempt"].as_u64().unwrap());
        if committed.contains(&key) && r["warmup"] == false && r["tail"] != true {
            *n.entry(key).or_insert(0) += 1;
        }
    }
    n
}

/// Every committed point of every group is committed once, per attempt.
fn each_committed_once(dir: &Path) {
    let mut seen = std::collections::BTreeSet::new();
    for e in events(&journal(dir), "point_done") {
        let key = (e["point"].as_str().unwrap().to_owned(), e["attempt"].as_u64().unwrap());
        assert!(seen.insert(key.clone()), "{key:?} committed twice");
    }
}

struct Row {
    name: &'static str,
    fake_only: bool,
    check: fn(Side),
}

const ROWS: &[Row] = &[
    Row {
        name: "resume_in_the_middle_measures_nothing_twice",
        fake_only: false,
        check: resume_in_the_middle_measures_nothing_twice,
    },
    Row {
        name: "fail_fast_stops_at_the_first_server_that_cannot_start",
        fake_only: false,
        check: fail_fast_stops_at_the_first_server_that_cannot_start,
    },
    Row {
        name: "a_dying_server_fails_its_point_and_the_rest_are_not_run",
        fake_only: false,
        check: a_dying_server_fails_its_point_and_the_rest_are_not_run,
    },
    Row {
        name: "records_before_a_crash_stay_uncommitted_after_resume",
        fake_only: false,
        check: records_before_a_crash_stay_uncommitted_after_resume,
    },
    Row {
        name: "precision_passes_over_repeats_a_steady_cell_does_not_need",
        fake_only: false,
        check: precision_passes_over_repeats_a_steady_cell_does_not_need,
    },
    Row {
        name: "a_rate_search_probes_within_its_budget_and_replays_on_resume",
        fake_only: false,
        check: a_rate_search_probes_within_its_budget_and_replays_on_resume,
    },
    Row {
        name: "a_tune_spends_its_budget_of_starts_in_two_sittings",
        fake_only: false,
        check: a_tune_spends_its_budget_of_starts_in_two_sittings,
    },
    Row {
        name: "two_configurations_search_side_by_side_on_two_slots",
        fake_only: false,
        check: two_configurations_search_side_by_side_on_two_slots,
    },
    Row {
        name: "a_tune_on_two_slots_batches_its_search_and_crosses_over_its_confirmation",
        fake_only: false,
        check: a_tune_on_two_slots_batches_its_search_and_crosses_over_its_confirmation,
    },
    Row {
        name: "two_groups_in_flight_interleave_under_one_journal",
        fake_only: false,
        check: two_groups_in_flight_interleave_under_one_journal,
    },
];

fn resume_in_the_middle_measures_nothing_twice(side: Side) {
    let case = Case::new(side, &spec(free_port(), "", &closed("[1, 2]", 12, "repeats: 2")));
    let first = case.call(&Call { interrupt_after: Some(1), ..Call::default() });
    assert_eq!(ending(&first), "interrupted");
    assert_eq!(oks(&case.dir()), 1);
    let again = case.call(&Call { resume: true, ..Call::default() });
    assert_eq!(ending(&again), "ok");
    assert_eq!(oks(&case.dir()), 4);
    each_committed_once(&case.dir());
    assert_eq!(events(&journal(&case.dir()), "server_start").len(), 2);
    assert!(committed_requests(&case.dir()).values().all(|n| *n == 12));
}

fn fail_fast_stops_at_the_first_server_that_cannot_start(side: Side) {
    let text = spec(free_port(), ", \"{{ mode }}\"", &closed("[1]", 4, ""))
        .replace("grid:\n", "grid:\n  mode: [--fail-start, --ok]\n");
    let case = Case::new(side, &text);
    assert_eq!(ending(&case.call(&Call { fail_fast: true, ..Call::default() })), "failed");
    assert_eq!(events(&journal(&case.dir()), "server_start").len(), 1, "the second server never started");
    assert_eq!(done(&case.dir()), [("failed".to_owned(), 0)]);
    let startups = common::startups(&case.dir());
    assert!(startups[0]["error"].as_str().unwrap().contains("fake engine refused to start"), "{:?}", startups[0]);
}

fn a_dying_server_fails_its_point_and_the_rest_are_not_run(side: Side) {
    let case = Case::new(side, &spec(free_port(), ", \"--die-after\", \"20\"", &closed("[1, 2]", 40, "")));
    assert_eq!(ending(&case.call(&Call::default())), "failed");
    let points = jsonl(&case.dir().join("points.jsonl"));
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["error"], "the server died during this point");
    assert!(points[1]["error"].as_str().unwrap().starts_with("not run"), "{}", points[1]);
    assert_eq!(done(&case.dir()), [("failed".to_owned(), 0), ("failed".to_owned(), 0)]);
}

fn records_before_a_crash_stay_uncommitted_after_resume(side: Side) {
    let case = Case::new(side, &spec(free_port(), "", &closed("[1, 2]", 30, "")));
    assert_eq!(ending(&case.call(&Call::default())), "ok");
    let path = case.dir().join("journal.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.pop().unwrap().contains("point_done"));
    let mut torn = lines.join("\n");
    torn.push_str("\n{\"event\":\"point_do");
    std::fs::write(&path, torn).unwrap();
    assert_eq!(ending(&case.call(&Call { resume: true, ..Call::default() })), "ok");
    let attempts: Vec<u64> = done(&case.dir()).iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts, [0, 1], "the point ran again under a new attempt");
    assert!(committed_requests(&case.dir()).values().all(|n| *n == 30));
}

fn precision_passes_over_repeats_a_steady_cell_does_not_need(side: Side) {
    // The zero endpoint's speed is real time on a shared machine: with tokens 1 ms apart a repeat lasts about
    // 0.3 s, so a scheduler's hiccup on busy cores is a small part of it (without a pace, repeats of a few
    // milliseconds differed by half and the cell went on to max_repeats).
    let extra = "precision: {rel_ci: 0.9, min_repeats: 3, max_repeats: 5}";
    let case = Case::new(side, &spec(free_port(), ", \"--itl-us\", \"1000\"", &closed("[1]", 40, extra)));
    assert_eq!(ending(&case.call(&Call::default())), "ok");
    assert_eq!(oks(&case.dir()), 3, "a steady cell stops at min_repeats");
}

fn a_rate_search_probes_within_its_budget_and_replays_on_resume(side: Side) {
    let rest = "load:\n  duration: 1s\n  max_tokens: 4\n  prompt_tokens: 4\n  warmup: 0\n  server_warmup: 0s\nslo: {e2e: 2s, attainment: 0.5}\nsearch: {rate: {low: 400, high: 1600, tolerance: 1.0}}";
    let case = Case::new(side, &spec(free_port(), "", rest));
    assert_eq!(ending(&case.call(&Call::default())), "ok");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.dir().join("plan.json")).unwrap()).unwrap();
    let max = plan["search"]["max_probes"].as_u64().unwrap() as usize;
    let probes = done(&case.dir()).len();
    assert!((1..=max).contains(&probes), "{probes} probes, at most {max}");
    each_committed_once(&case.dir());
    // Resumed, the finished search starts no server.
    assert_eq!(ending(&case.call(&Call { resume: true, ..Call::default() })), "ok");
    assert_eq!(done(&case.dir()).len(), probes);
    assert_eq!(events(&journal(&case.dir()), "server_start").len(), 1);
}

fn a_tune_spends_its_budget_of_starts_in_two_sittings(side: Side) {
    let rest = "tune:\n  space:\n    capacity: {min: 1, max: 8}\n  objective: throughput\n  p95_budget: 5s\n  budget: {starts: 4}\n  confirm_repeats: 1\n  confirm_starts: 1\nrepeats: 1\nload:\n  concurrency: 8\n  requests: 16\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s";
    let case = Case::new(side, &spec(free_port(), ", \"--capacity\", \"{{ capacity }}\"", rest));
    assert_eq!(ending(&case.call(&Call { max_starts: Some(1), ..Call::default() })), "ok");
    assert_eq!(events(&journal(&case.dir()), "server_start").len(), 1);
    assert_eq!(ending(&case.call(&Call { resume: true, ..Call::default() })), "ok");
    assert_eq!(events(&journal(&case.dir()), "server_start").len(), 4, "the whole budget, nothing more");
    each_committed_once(&case.dir());
    assert!(case.dir().join("tune.md").exists());
}

fn two_configurations_search_side_by_side_on_two_slots(side: Side) {
    let rest = "grid:\n  capacity: [1, 4]\nload:\n  duration: 1s\n  max_tokens: 4\n  prompt_tokens: 4\n  warmup: 0\n  server_warmup: 0s\nslo: {e2e: 2s, attainment: 0.5}\nsearch: {rate: {low: 400, high: 1600, tolerance: 1.0}}";
    let case = Case::new(side, &spec(free_port(), ", \"--capacity\", \"{{ capacity }}\"", rest));
    assert_eq!(ending(&case.call(&Call { slots: 2, ..Call::default() })), "ok");
    let j = journal(&case.dir());
    // Both searches' servers were up at once: every start comes before the first end.
    let first_end = j.iter().position(|e| e["event"] == "server_end").unwrap();
    assert_eq!(j[..first_end].iter().filter(|e| e["event"] == "server_start").count(), 2, "{j:?}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.dir().join("plan.json")).unwrap()).unwrap();
    let max = plan["search"]["max_probes"].as_u64().unwrap() as usize;
    for g in plan["groups"].as_array().unwrap() {
        let probes = events(&j, "point_done").iter().filter(|e| e["group"] == g["id"]).count();
        assert!((1..=max).contains(&probes), "{probes} probes for {}, at most {max}", g["id"]);
    }
    each_committed_once(&case.dir());
    assert!(case.dir().join("rate_search.json").exists());
}

fn a_tune_on_two_slots_batches_its_search_and_crosses_over_its_confirmation(side: Side) {
    // Six starts: two for the search (one batch on two slots), then the pick and the defaults twice each.
    let rest = "tune:\n  space:\n    capacity: {min: 1, max: 8}\n  objective: throughput\n  p95_budget: 5s\n  budget: {starts: 6}\n  confirm_repeats: 1\n  confirm_starts: 2\nrepeats: 1\nload:\n  concurrency: 8\n  requests: 16\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s";
    let case = Case::new(side, &spec(free_port(), ", \"--capacity\", \"{{ capacity }}\", \"--itl-us\", \"500\"", rest));
    assert_eq!(ending(&case.call(&Call { slots: 2, ..Call::default() })), "ok");
    let j = journal(&case.dir());
    let starts = events(&j, "server_start");
    assert_eq!(starts.len(), 6, "the whole budget: {starts:?}");
    // The search's two starts ran at once.
    let first_end = j.iter().position(|e| e["event"] == "server_end").unwrap();
    assert_eq!(j[..first_end].iter().filter(|e| e["event"] == "server_start").count(), 2);
    // Each confirmed configuration ran once on each slot: GPU-to-GPU differences cancel in the pairs.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.dir().join("plan.json")).unwrap()).unwrap();
    let defaults = plan["tune"]["defaults_group"].as_str().unwrap();
    let slots_of = |g: &str| -> Vec<u64> {
        starts.iter().filter(|e| e["group"] == g).map(|e| e["slot"].as_u64().unwrap()).collect()
    };
    let mut d = slots_of(defaults);
    d.sort_unstable();
    assert_eq!(d, [0, 1], "the defaults' two starts were not on both slots");
    let tune: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.dir().join("tune.json")).unwrap()).unwrap();
    let winner = tune["winner"].as_str().expect("a pick");
    let w = slots_of(winner);
    let confirm: Vec<u64> = w[w.len() - 2..].to_vec();
    assert_ne!(confirm[0], confirm[1], "the pick's confirmation starts were on one slot: {w:?}");
    each_committed_once(&case.dir());
    // The server time spent counts every start, the earlier starts of a group started again included.
    let mut ready = 0.0;
    for g in std::fs::read_dir(case.dir().join("servers")).unwrap() {
        for f in std::fs::read_dir(g.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().unwrap().to_string_lossy().starts_with("startup") {
                let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
                ready += s["ready_s"].as_f64().unwrap_or(0.0);
            }
        }
    }
    let walls: f64 = jsonl(&case.dir().join("points.jsonl")).iter().map(|p| p["wall_s"].as_f64().unwrap()).sum();
    let spent = tune["spent_s"].as_f64().unwrap();
    assert!((spent - (ready + walls)).abs() < 1e-6, "spent_s {spent} against {ready} + {walls}");
}

fn two_groups_in_flight_interleave_under_one_journal(side: Side) {
    // Streams of 3 ms a token on the zero endpoint, so the two slots' points overlap in time.
    let faults = ", \"--capacity\", \"{{ capacity }}\", \"--itl-us\", \"3000\"";
    let text =
        spec(free_port(), faults, &closed("[1, 2]", 4, "repeats: 2")).replace("grid:\n", "grid:\n  capacity: [1, 2]\n");
    let case = Case::new(side, &text);
    assert_eq!(ending(&case.call(&Call { slots: 2, ..Call::default() })), "ok");
    let j = journal(&case.dir());
    let groups: Vec<&str> = events(&j, "point_done").iter().map(|e| e["group"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 8);
    let switches = groups.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 2, "the two groups' points did not interleave: {groups:?}");
    each_committed_once(&case.dir());
    let starts = events(&j, "server_start");
    assert_eq!(starts.len(), 2);
    let slots: BTreeSet<u64> = starts.iter().map(|e| e["slot"].as_u64().unwrap()).collect();
    assert_eq!(slots, [0, 1].into(), "each group on a slot of its own");
    assert_eq!(events(&j, "server_end").len(), 2);
    // Each slot's server listened on a port of its own, and says so.
    let ports: BTreeSet<u64> =
        common::startups(&case.dir()).iter().map(|s| s["slot"]["port"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    // Each point's start and done bracket only its own records: one writer, lines never torn.
    assert!(committed_requests(&case.dir()).values().all(|n| *n == 4 || *n == 8));
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    for row in ROWS {
        for side in [Side::Fake, Side::Real] {
            if side == Side::Real && row.fake_only {
                continue;
            }
            let check = row.check;
            let name = format!("{} [{}]", row.name, if side == Side::Fake { "fake" } else { "zero endpoint" });
            trials.push(libtest_mimic::Trial::test(name, move || {
                check(side);
                Ok(())
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
