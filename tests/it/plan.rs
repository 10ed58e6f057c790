//! The planner: expansion, scope inference, grouping, repeats, hash stability, and `plan` output.

use servelab::plan::{self, Plan};
use servelab::spec;

fn plan_of(text: &str) -> Plan {
    let loaded = spec::load_str("t.yaml", text, &[]).unwrap_or_else(|e| panic!("{e}"));
    plan::build_located(&loaded).unwrap_or_else(|e| panic!("{e}"))
}

const SWEEP_4X4: &str = r#"
name: t
engine:
  model: m
  args: { max-model-len: "{{ max_model_len }}" }
grid:
  max_model_len: [512, 1024, 2048, 4096]
  concurrency: [1, 4, 8, 16]
load: { concurrency: "{{ concurrency }}", requests: 32, max_tokens: 64, prompt_tokens: 128 }
"#;

#[test]
fn client_scoped_axes_share_a_server() {
    let plan = plan_of(SWEEP_4X4);
    assert_eq!(plan.grid_points, 16);
    assert_eq!(plan.server_starts(), 4, "concurrency is client-scoped: 4 starts, not 16");
    assert_eq!(plan.server_vars, ["max_model_len"]);
    assert_eq!(plan.client_vars, ["concurrency"]);
    for (group, len) in plan.groups.iter().zip([512, 1024, 2048, 4096]) {
        assert_eq!(group.server.max_model_len, Some(len));
        let levels: Vec<u32> = group.points.iter().map(|p| p.client.as_ref().unwrap().concurrency).collect();
        assert_eq!(levels, [1, 4, 8, 16]);
    }
}

#[test]
fn an_axis_used_by_the_engine_is_server_scoped() {
    let text = SWEEP_4X4.replace("args: { max-model-len", "args: { max-num-seqs: \"{{ concurrency }}\", max-model-len");
    let plan = plan_of(&text);
    assert_eq!(plan.server_starts(), 16);
    assert_eq!(plan.server_vars, ["max_model_len", "concurrency"]);
    assert!(plan.client_vars.is_empty());
}

#[test]
fn expansion_is_the_cartesian_product_first_axis_slowest() {
    let plan = plan_of(
        "name: t\nengine: {model: m}\ngrid:\n  a: [1, 2]\n  b: [x, y, z]\nload: {concurrency: \"{{ a }}\", prompt_tokens: \"{{ 8 if b == 'x' else 16 }}\"}\n",
    );
    let order: Vec<String> = plan.points().map(|(_, p)| format!("{}{}", p.vars["a"], p.vars["b"])).collect();
    assert_eq!(order, ["1x", "1y", "1z", "2x", "2y", "2z"]);
    assert_eq!(plan.server_starts(), 1, "client-scoped axes do not restart the server");
}

#[test]
fn repeats_are_interleaved_and_ids_are_distinct() {
    let plan = plan_of(&format!("{SWEEP_4X4}repeats: 3\n"));
    assert_eq!(plan.runs(), 48);
    let group = &plan.groups[0];
    let order: Vec<(u32, u32)> =
        group.points.iter().map(|p| (p.repeat, p.client.as_ref().unwrap().concurrency)).collect();
    assert_eq!(&order[..5], [(0, 1), (0, 4), (0, 8), (0, 16), (1, 1)]);
    let mut ids: Vec<&str> = plan.points().map(|(_, p)| p.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 48);
}

#[test]
fn ids_are_stable_content_hashes() {
    let a = plan_of(SWEEP_4X4);
    let b = plan_of(SWEEP_4X4);
    assert_eq!(a, b);
    // Pinned by the snapshot: a change here silently invalidates every journal (resume) and must be
    // deliberate.
    assert_id_shape(&a.groups[0].id);
    insta::assert_snapshot!(
        "ids",
        a.points().map(|(g, p)| format!("{} {}", g.id, p.id)).collect::<Vec<_>>().join("\n")
    );
    // Formatting and key order do not change identity; timeouts do not either; args do.
    let reformatted =
        SWEEP_4X4.replace("requests: 32, max_tokens: 64", "max_tokens: 64,   requests: 32") + "engine_note: x\n";
    assert!(spec::load_str("t.yaml", &reformatted, &[]).is_err(), "unknown keys are rejected");
    let same = plan_of(
        &SWEEP_4X4
            .replace("requests: 32, max_tokens: 64", "max_tokens: 64,   requests: 32")
            .replace("  model: m\n", "  model: m\n  ready_timeout: 10m\n"),
    );
    assert_eq!(
        same.points().map(|(_, p)| &p.id).collect::<Vec<_>>(),
        a.points().map(|(_, p)| &p.id).collect::<Vec<_>>()
    );
    let other = plan_of(&SWEEP_4X4.replace("model: m", "model: m2"));
    assert_ne!(other.groups[0].id, a.groups[0].id);
}

fn assert_id_shape(id: &str) {
    assert_eq!(id.len(), 12);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn env_order_does_not_change_the_server_id() {
    let a = plan_of("name: t\nengine:\n  model: m\n  env: {A: '1', B: '2'}\n");
    let b = plan_of("name: t\nengine:\n  model: m\n  env: {B: '2', A: '1'}\n");
    assert_eq!(a.groups[0].id, b.groups[0].id);
}

#[test]
fn requests_default_to_four_times_concurrency() {
    let plan = plan_of(SWEEP_4X4);
    let requests: Vec<u32> = plan.groups[0].points.iter().map(|p| p.client.as_ref().unwrap().requests).collect();
    assert_eq!(requests, [32, 32, 32, 64]);
    let exact = plan_of(&SWEEP_4X4.replace("requests: 32", "requests: 32, exact_requests: true"));
    assert!(exact.groups[0].points.iter().all(|p| p.client.as_ref().unwrap().requests == 32));
}

#[test]
fn args_render_to_argv_in_yaml_order() {
    let plan = plan_of(
        r#"
name: t
engine:
  model: /models/x
  args:
    max-model-len: "{{ 2 * 1024 }}"
    enforce-eager: true
    enable-prefix-caching: false
    seed: null
    middleware: [a, b]
    served-model-name: "{{ none }}"
  env: { VLLM_CPU_KVCACHE_SPACE: 1 }
"#,
    );
    let server = &plan.groups[0].server;
    assert_eq!(
        server.argv.join(" "),
        "vllm serve /models/x --max-model-len 2048 --enforce-eager --no-enable-prefix-caching --middleware a --middleware b --host 127.0.0.1 --port 8000"
    );
    assert_eq!(server.env["VLLM_CPU_KVCACHE_SPACE"], "1");
    assert_eq!(server.max_model_len, Some(2048));
    assert_eq!(server.base_url, "http://127.0.0.1:8000");
    assert_eq!(server.ready_url, "http://127.0.0.1:8000/health");
}

#[test]
fn set_overrides_any_value() {
    let loaded = spec::load_str(
        "t.yaml",
        SWEEP_4X4,
        &["engine.model=/data/qwen".into(), "grid.concurrency=[2]".into(), "repeats=2".into()],
    )
    .unwrap();
    let plan = plan::build_located(&loaded).unwrap();
    assert_eq!(plan.groups[0].server.argv[2], "/data/qwen");
    assert_eq!(plan.runs(), 4 * 2);
}

#[test]
fn external_engines_start_nothing() {
    let plan = plan_of("name: t\nengine: {kind: external, base_url: 'http://127.0.0.1:9000/'}\nload: {}\n");
    assert_eq!(plan.server_starts(), 0);
    assert!(plan.groups[0].server.argv.is_empty());
    assert_eq!(plan.groups[0].server.base_url, "http://127.0.0.1:9000");
}

#[test]
fn the_estimate_counts_starts_and_request_batches() {
    let plan = plan_of(&format!("{SWEEP_4X4}estimate: {{startup: 30s, stop: 2s, per_request: 100ms}}\n"));
    // 4 starts × 32 s and a 3 s server warmup each, plus per group (2 warmup + requests) / concurrency
    // batches of 0.1 s: c=1: 34, c=4: 9, c=8: 5, c=16: 5 (66/16 rounded up) → 53 batches per group.
    let expected = 4.0 * (32.0 + 3.0) + 4.0 * 53.0 * 0.1;
    assert!((plan.estimate.total_s - expected).abs() < 1e-9, "{}", plan.estimate.total_s);
}

#[test]
fn plan_output_of_the_reference_experiments() {
    for file in [
        "day-007/kv_scaling",
        "day-007/batching",
        "day-007/concurrency_sweep",
        "cpu/kv_scaling",
        "cpu/batching",
        "cpu/concurrency_sweep",
    ] {
        let path = format!("{}/experiments/{file}.yaml", env!("CARGO_MANIFEST_DIR"));
        let loaded = spec::load_file(std::path::Path::new(&path), &[]).unwrap();
        let plan = plan::build_located(&loaded).unwrap();
        insta::assert_snapshot!(file.replace('/', "__"), plan::table::render(&plan));
        if file.ends_with("kv_scaling") {
            assert_eq!(plan.server_starts(), 4);
        }
    }
}

/// `engine.config_file` reaches vLLM as `--config PATH`; the server's id follows the file's content, not its
/// path (as a trace's does), and a missing file is an error at its key before anything starts.
#[test]
fn a_config_file_is_passed_as_config_and_identified_by_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let spec = |path: &str| {
        format!(
            "name: t\nengine:\n  model: m\n  config_file: {path}\n  args: {{ dtype: bfloat16 }}\nload: {{ concurrency: 1, requests: 4 }}\n"
        )
    };
    let a = write("a.yaml", "max-num-seqs: 4\nmax-model-len: 512\n");
    let plan = plan_of(&spec(&a));
    let server = &plan.groups[0].server;
    let at = server.argv.iter().position(|x| x == "--config").expect("--config in argv");
    assert_eq!(server.argv[at + 1], a);
    assert_eq!(server.argv[..3], ["vllm", "serve", "m"]);
    assert_eq!(server.max_model_len, Some(512), "read from the file");
    let id = &plan.groups[0].id;
    let moved = write("b.yaml", "max-num-seqs: 4\nmax-model-len: 512\n");
    assert_eq!(&plan_of(&spec(&moved)).groups[0].id, id, "the same content at another path: the same server");
    assert_eq!(plan_of(&spec(&moved)).groups[0].points[0].id, plan.groups[0].points[0].id);
    std::fs::write(&a, "max-num-seqs: 8\nmax-model-len: 512\n").unwrap();
    assert_ne!(&plan_of(&spec(&a)).groups[0].id, id, "other content at the same path: another server");
    let no_file = plan_of(&spec(&a).replace(&format!("  config_file: {a}\n"), ""));
    assert!(!no_file.groups[0].server.argv.contains(&"--config".to_owned()));

    let err = |text: &str| plan::build_located(&spec::load_str("t.yaml", text, &[]).unwrap()).unwrap_err().to_string();
    let missing = err(&spec("no/such.yaml"));
    assert!(missing.contains("t.yaml:4:") && missing.contains("engine.config_file"), "{missing}");
    assert!(missing.contains("cannot read config file `no/such.yaml`"), "{missing}");
    let both = err(&spec(&a).replace("dtype: bfloat16", "max_num_seqs: 2"));
    assert!(both.contains("engine.args.max_num_seqs") && both.contains("vLLM would use this one"), "{both}");
    let command = err(&spec(&a).replace("  model: m\n", "  kind: command\n  command: [srv]\n"));
    assert!(command.contains("for `kind: vllm` only"), "{command}");
}

/// A trace replay's points keep their ids, and plan.json its bytes: the recorded example, planned again from
/// its spec (the trace window is in tests/fixtures), has the ids and the plan its run folder recorded, and
/// the recorded plan reads and writes back byte for byte (a changed id would break resume of that folder).
#[test]
fn a_trace_replay_plans_the_ids_and_bytes_its_example_recorded() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("examples/cpu-trace-replay/run1");
    let recorded = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    let loaded = spec::load_file(&dir.join("spec.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let planned = plan::build_located(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let stored: Plan = serde_json::from_str(&recorded).unwrap();
    let ids = |p: &Plan| p.points().map(|(g, p)| format!("{} {}", g.id, p.id)).collect::<Vec<_>>();
    assert_eq!(ids(&planned), ids(&stored));
    assert!(planned.points().all(|(_, p)| p.client.as_ref().is_some_and(|c| c.trace.is_some())));
    assert_eq!(serde_json::to_string_pretty(&planned).unwrap().trim_end(), recorded.trim_end());
    assert_eq!(serde_json::to_string_pretty(&stored).unwrap().trim_end(), recorded.trim_end());
}
