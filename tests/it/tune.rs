//! `servelab tune`'s control flow against a fake engine (`servelab-zero-endpoint`, whose `--capacity` flag
//! caps the requests it serves at once, so the objective really depends on the tuned flag): the search
//! starts only what its budget allows, the confirmation measures the winner and vLLM's defaults (the flag left
//! out) again on fresh servers, every point is journaled once, a resume with a larger budget goes on from
//! what was measured, and `servelab report` re-renders the same files. No figure is claimed from the fake
//! engine; the real-engine tune is tests/vllm_cpu.rs and examples/.

use crate::common;
use common::jsonl;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");
const BIN: &str = env!("CARGO_BIN_EXE_servelab");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spec(port: u16, starts: u32) -> String {
    format!(
        "name: tune\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"2000\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\ntune:\n  space:\n    capacity: {{min: 1, max: 8}}\n  objective: throughput\n  p95_budget: 5s\n  budget: {{starts: {starts}}}\n  confirm_repeats: 2\n  confirm_starts: 2\nrepeats: 2\nload:\n  concurrency: 8\n  requests: 24\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n"
    )
}

fn tune(spec_path: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let o = Command::new(BIN)
        .args(["tune", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--run-id", "t"])
        .args(extra)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Server starts per group, from the journal.
fn starts(dir: &Path) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in jsonl(&dir.join("journal.jsonl")).iter().filter(|e| e["event"] == "server_start") {
        *n.entry(e["group"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    n
}

fn argv_of(dir: &Path, group: &str) -> Vec<String> {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("servers").join(group).join("startup.json")).unwrap()).unwrap();
    s["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_tune_searches_within_its_budget_confirms_and_resumes_without_measuring_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec_path: PathBuf = tmp.path().join("tune.yaml");
    std::fs::write(&spec_path, spec(port, 6)).unwrap();
    let out = tmp.path().join("out");
    // In two sittings: one server start now (a GPU lent in slots), the rest on resume.
    let o = tune(&spec_path, &out, &["--max-starts", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let dir = out.join("tune").join("t");
    assert_eq!(starts(&dir).values().sum::<usize>(), 1);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t["next"]["phase"], "search", "the tune says what comes next: {}", t["next"]);
    assert!(std::fs::read_to_string(dir.join("tune.md")).unwrap().contains("not finished"));
    let o = tune(&spec_path, &out, &["--resume", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let s = starts(&dir);
    assert_eq!(s.values().sum::<usize>(), 6, "2 search starts + 2 confirmation starts each of 2: {s:?}");
    // The console numbers the resumed starts after the first and counts every start, not configurations.
    let console = String::from_utf8_lossy(&o.stderr);
    assert!(console.contains("server 2/6 ") && !console.contains("server 1/6 "), "{console}");
    assert!(console.contains("6 of 6 server starts ok"), "{console}");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t["search_starts"], 2);
    assert_eq!(t["confirm_starts"], 4);
    assert!(t["next"].is_null(), "the tune finished: {}", t["next"]);
    let winner = t["winner"].as_str().unwrap().to_owned();
    assert_eq!(s[&winner], 3, "the winner ran in the search and twice again in the confirmation");
    assert!(t["gain"]["rel_ci"].is_array(), "two starts each give an interval over starts: {}", t["gain"]);
    let defaults = t["rows"].as_array().unwrap().iter().find(|r| r["defaults"] == true).unwrap();
    let dg = defaults["group"].as_str().unwrap();
    assert!(!argv_of(&dir, dg).contains(&"--capacity".to_owned()), "the defaults leave the tuned flag out");
    assert_eq!(defaults["confirm"]["per_repeat"].as_array().unwrap().len(), 4);
    assert_eq!(defaults["confirm"]["per_start"].as_array().unwrap().len(), 2);
    // The search starts in the middle of the space (capacity 4 of 1, 2, 4, 8), then goes by expected improvement.
    let first = t["rows"].as_array().unwrap().iter().find(|r| r["searched"] == 1).unwrap();
    assert_eq!(first["setting"], "capacity=4");
    let md = std::fs::read_to_string(dir.join("tune.md")).unwrap();
    assert!(t["decision"]["kind"].is_string(), "the decision is typed: {}", t["decision"]);
    let said = String::from_utf8_lossy(&o.stdout);
    let line = said.lines().find_map(|l| l.split_once("tune.md: ")).map(|(_, d)| d.to_owned()).unwrap();
    assert!(md.contains(&format!("**{line}**")), "the console and the report word the decision alike: {line}");
    assert!(std::fs::read_to_string(dir.join("tune_pareto.svg")).unwrap().contains("<svg"));

    // A larger budget on resume: two more search starts, then a confirmation only where one is missing.
    std::fs::write(&spec_path, spec(port, 8)).unwrap();
    let o = tune(&spec_path, &out, &["--resume", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let t2: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t2["search_starts"], 4, "{t2}");
    let s2 = starts(&dir);
    let new_winner = t2["winner"].as_str().unwrap();
    let expected = 6 + 2 + 2 * usize::from(new_winner != winner);
    assert_eq!(s2.values().sum::<usize>(), expected, "{s2:?}");
    // Every point is recorded once: nothing measured twice across the resume.
    let mut seen = BTreeMap::new();
    for p in jsonl(&dir.join("points.jsonl")) {
        *seen.entry(p["point"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");

    // The report re-renders the same files from the records.
    let before = std::fs::read(dir.join("tune.md")).unwrap();
    let o = Command::new(BIN).args(["report", dir.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(dir.join("tune.md")).unwrap(), before);
}

#[test]
fn tune_specs_are_checked_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("budget: {starts: 6}", "budget: {starts: 4}", "leave none for the search"),
        ("objective: throughput", "objective: goodput", "`goodput` objective"),
        ("capacity: {min: 1, max: 8}", "capacity: [2, 2]", "lists 2 twice"),
        ("capacity: {min: 1, max: 8}", "capacity: {min: 8, max: 1}", "is empty"),
        ("\nrepeats: 2", "\nprecision: {rel_ci: 0.05}", "`precision:` and `tune:`"),
        ("objective: throughput", "objective: throughput\n  screen: 1", "is not a share of the measured load"),
        ("confirm_starts: 2\n", "confirm_starts: 2\n  equivalence_margin: 2\n", "above 0 and below 1"),
    ];
    for (from, to, want) in cases {
        let text = spec(1, 6).replace(from, to);
        let p = tmp.path().join("bad.yaml");
        std::fs::write(&p, &text).unwrap();
        let o = Command::new(BIN).args(["validate", p.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{to}: {err}");
        assert!(err.contains("bad.yaml:"), "the error names the file and line: {err}");
    }
}

/// The goodput objective: an open loop at two rates with an SLO; the configuration that serves more requests
/// within it wins (the fake engine with one request at a time falls behind at 200/s; with four it does not).
#[test]
fn a_goodput_tune_picks_the_configuration_that_meets_the_slo_more_often() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        "name: tune\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"2000\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\ntune:\n  space:\n    capacity: [1, 4]\n  objective: goodput\n  budget: {{starts: 4}}\n  confirm_starts: 1\n  confirm_repeats: 1\ngrid:\n  rate: [200, 400]\nload:\n  rate: \"{{{{ rate }}}}\"\n  duration: 1s\n  max_tokens: 4\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\nslo: {{e2e: 200ms, attainment: 0.9}}\nmeasure: {{memory: procfs}}\n"
    );
    let spec_path = tmp.path().join("tune.yaml");
    std::fs::write(&spec_path, text).unwrap();
    let out = tmp.path().join("out");
    let o = tune(&spec_path, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let dir = out.join("tune").join("t");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t["objective"]["kind"], "goodput", "{}", t["objective"]);
    assert_eq!(t["objective"]["e2e_s"], 0.2, "{}", t["objective"]);
    let md = std::fs::read_to_string(dir.join("tune.md")).unwrap();
    assert!(md.contains("requests/s meeting the SLO: e2e ≤ 200 ms)"), "the template words the SLO");
    assert_eq!(t["unit"], "goodput_rps");
    assert!(md.contains("the objective (req/s meeting the SLO)"), "the template words the unit");
    let rows = t["rows"].as_array().unwrap();
    let pick = rows.iter().find(|r| r["group"] == t["winner"]).unwrap();
    assert_eq!(pick["setting"], "capacity=4", "{rows:?}");
    assert!(pick["search"]["level"].as_str().unwrap().starts_with("rate="), "{pick}");
    let slow = rows.iter().find(|r| r["setting"] == "capacity=1").unwrap();
    assert!(slow["search"]["value"].as_f64().unwrap() < pick["search"]["value"].as_f64().unwrap());
    assert_eq!(starts(&dir).values().sum::<usize>(), 4, "2 searched + 1 confirmation start each");
}

/// A tune whose pick is vLLM's defaults, with no other flag, writes `recommended.yaml` as `{}`: comments alone
/// would be an empty document, on which vLLM 0.32.0's `--config` fails (`'NoneType' object has no attribute
/// 'items'`). The in-process fake caps requests in flight at `--max-num-seqs`, else at `--capacity` (2 here,
/// standing for vLLM's default): neither searched value serves more than the defaults.
#[test]
fn a_recommendation_of_the_defaults_alone_is_an_empty_mapping_vllm_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "name: rec\nengine:\n  model: m\n  port: PORT\n  command: [vllm, --capacity, \"2\", --noise-pct, \"2\", --seed, \"1\", serve, \"{{ model }}\"]\ntune:\n  space:\n    max-num-seqs: [1, 2]\n  objective: throughput\n  p95_budget: 30s\n  budget: {starts: 6}\n  confirm_repeats: 1\n  confirm_starts: 2\nrepeats: 1\nload:\n  concurrency: 8\n  requests: 16\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\n";
    let text = text.replace("PORT", &free_port().to_string());
    let loaded = servelab::spec::load_str("rec.yaml", &text, &[]).unwrap_or_else(|e| panic!("{e}"));
    let plan = servelab::plan::build_located(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let opts = servelab::run::RunOptions::serial(tmp.path().to_path_buf(), Some("r".to_owned()));
    let seam =
        servelab::run::Seam { fake: true, fake_delay: std::time::Duration::from_millis(1), interrupt_after: None };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    rt.block_on(servelab::run::execute_on(&loaded, &plan, &opts, &stop, &seam)).unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("rec/r");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert!(t["recommended"].as_str().is_some_and(|c| !c.contains("--max-num-seqs")), "the defaults: {t}");
    let yaml = std::fs::read_to_string(dir.join("recommended.yaml")).unwrap();
    assert!(yaml.lines().filter(|l| !l.starts_with('#')).eq(["{}"]), "{yaml}");
    let flags: indexmap::IndexMap<String, serde_json::Value> = serde_saphyr::from_str(&yaml).unwrap();
    assert!(flags.is_empty());
}

/// A server start cut off midway (Ctrl-C, or a device call's time limit) is measured again in full when the
/// run resumes, on one new server: a confirmation start's figure is one sample of the between-start noise, and
/// a search start's short and full phases are compared on one start, only if one server measured them all.
/// The earlier attempts stay in the records. `cut` is how many points the first sitting measures: 1 stops the
/// first search start between its short and full phase; 3 stops the first confirmation start after its first
/// repeat (two search starts of two points each come before it without screening, one with).
#[test]
fn a_start_cut_off_midway_is_measured_again_in_full_on_resume() {
    for (screen, cut) in [("0.25", 1), ("0", 3)] {
        let (dir, _tmp) = cut_and_resume(screen, cut);
        let (servers, remeasured) = servers_per_start(&dir);
        for (start, s) in &servers {
            assert!(s.len() <= 1, "screen {screen}: {start} measured on servers {s:?}");
        }
        assert_eq!(remeasured, 1, "screen {screen}: the cut-off start's one recorded point, measured again");
    }
}

/// A tune on the in-process fake (confirm_starts 2 of 2 repeats, one search repeat, `screen`), interrupted
/// after `cut` points, then resumed to the end. Returns the run folder (and the directory that holds it).
fn cut_and_resume(screen: &str, cut: usize) -> (PathBuf, tempfile::TempDir) {
    use servelab::run::{RunOptions, Seam, execute_on};
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "name: cut\nengine:\n  model: m\n  port: {}\n  command: [vllm, --capacity, \"2\", --noise-pct, \"2\", --seed, \"1\", serve, \"{{{{ model }}}}\"]\ntune:\n  space:\n    max-num-seqs: [1, 4]\n  objective: throughput\n  p95_budget: 30s\n  budget: {{starts: 6}}\n  confirm_repeats: 2\n  confirm_starts: 2\n  screen: {screen}\nrepeats: 1\nload:\n  concurrency: 8\n  requests: 16\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\n",
        free_port()
    );
    let loaded = servelab::spec::load_str("cut.yaml", &text, &[]).unwrap_or_else(|e| panic!("{e}"));
    let plan = servelab::plan::build_located(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tmp.path().join("cut/r");
    let run = |resume: Option<PathBuf>, interrupt_after: Option<usize>| {
        let opts = RunOptions { resume, ..RunOptions::serial(tmp.path().to_path_buf(), Some("r".to_owned())) };
        let seam = Seam { fake: true, fake_delay: std::time::Duration::from_millis(1), interrupt_after };
        let stop = std::sync::atomic::AtomicBool::new(false);
        rt.block_on(execute_on(&loaded, &plan, &opts, &stop, &seam)).unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(run(None, Some(cut)).interrupted);
    assert!(!run(Some(dir.clone()), None).interrupted);
    (dir, tmp)
}

/// For each (group, start) of a tune with one search repeat and confirmation starts of two repeats (the search
/// start: repeat 0 and the short phase's repeat 5; confirmation start k: repeats 1 + 2k and 2 + 2k), the server
/// starts (the journal's n-th `server_start`) that measured the latest attempts of its points; and how many of
/// those latest attempts are a second attempt or later.
fn servers_per_start(dir: &Path) -> (BTreeMap<String, std::collections::BTreeSet<usize>>, usize) {
    let mut start_of: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut starts = 0;
    for e in jsonl(&dir.join("journal.jsonl")) {
        match e["event"].as_str() {
            Some("server_start") => starts += 1,
            Some("point_start") => {
                start_of.insert((e["point"].as_str().unwrap().to_owned(), e["attempt"].as_u64().unwrap()), starts);
            }
            _ => {}
        }
    }
    let mut latest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for p in jsonl(&dir.join("points.jsonl")) {
        let (id, attempt) = (p["point"].as_str().unwrap().to_owned(), p["attempt"].as_u64().unwrap());
        if latest.get(&id).is_none_or(|(a, _)| attempt >= *a) {
            latest.insert(id, (attempt, p["status"].as_str().unwrap().to_owned()));
        }
    }
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    let (mut out, mut remeasured) = (BTreeMap::new(), 0);
    for g in plan["groups"].as_array().unwrap() {
        for p in g["points"].as_array().unwrap() {
            let Some((attempt, status)) = latest.get(p["id"].as_str().unwrap()) else { continue };
            assert_eq!(status, "ok");
            remeasured += usize::from(*attempt > 0);
            let start = match p["repeat"].as_u64().unwrap() {
                0 | 5 => "search".to_owned(),
                r => format!("confirmation {}", (r - 1) / 2),
            };
            let server = start_of[&(p["id"].as_str().unwrap().to_owned(), *attempt)];
            out.entry(format!("{} {start}", g["id"])).or_insert_with(std::collections::BTreeSet::new).insert(server);
        }
    }
    (out, remeasured)
}
