//! The binary: validate, plan (text and JSON), schema freshness, and the reference experiments.

use std::path::Path;
use std::process::Command;

use crate::common;

fn servelab(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn committed_schema_is_fresh() {
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/experiment.schema.json"))
            .unwrap_or_default();
    let (code, fresh, _) = servelab(&["schema"]);
    assert_eq!(code, 0);
    assert_eq!(fresh, servelab::spec::schema::schema_json());
    assert!(
        committed == fresh,
        "schemas/experiment.schema.json is stale: run `cargo run -- schema > schemas/experiment.schema.json`"
    );
}

#[test]
fn every_experiment_has_the_modeline_validates_and_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let tmp = tempfile::tempdir().unwrap();
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            assert!(first.starts_with("# yaml-language-server: $schema="), "{} lacks the modeline", path.display());
            let schema = path.parent().unwrap().join(first.split("$schema=").nth(1).unwrap());
            assert!(schema.exists(), "{}: modeline points at {}", path.display(), schema.display());
            let p = path.to_str().unwrap();
            // The device specs' model is made on the device (/tmp/model); a spec that needs its tokenizer
            // here (chat text) is checked with a stand-in folder holding one.
            let mut args = vec![p.to_string()];
            if text.contains("endpoint: chat") && text.contains("model: /tmp/model") {
                args.push("--set".into());
                args.push(format!("engine.model={}", common::word_model(tmp.path()).display()));
            }
            let with =
                |cmd: &'static str| std::iter::once(cmd).chain(args.iter().map(String::as_str)).collect::<Vec<&str>>();
            let (code, out, err) = servelab(&with("validate"));
            assert_eq!(code, 0, "{p}: {err}");
            assert!(out.starts_with("ok: "));
            let (code, _, err) = servelab(&with("plan"));
            assert_eq!(code, 0, "{p}: {err}");
            count += 1;
        }
    }
    assert!(count >= 6, "expected the three reference experiments for GPU and CPU, found {count}");
}

#[test]
fn plan_prints_server_starts_and_json() {
    let (code, out, _) = servelab(&["plan", "experiments/day-007/kv_scaling.yaml"]);
    assert_eq!(code, 0);
    assert!(out.contains("server starts: 4 (one start per grid point would be 4)"), "{out}");
    let (code, out, _) =
        servelab(&["plan", "--json", "experiments/cpu/concurrency_sweep.yaml", "--set", "engine.model=/m"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["groups"].as_array().unwrap().len(), 1);
    assert_eq!(json["groups"][0]["points"].as_array().unwrap().len(), 18);
    assert_eq!(json["groups"][0]["server"]["argv"][2], "/m");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = servelab(&["plan"]);
    assert_eq!(code, 2);
    let (code, _, err) = servelab(&["plan", "experiments/cpu/batching.yaml", "--set", "no-equals-sign"]);
    assert_eq!(code, 2);
    assert!(err.contains("has no `=`"), "{err}");
}

/// `plan --gpu-memory` predicts each vLLM server's KV pool from the model folder: with
/// `--kv-cache-memory-bytes` the pool is that budget, 1 GiB of the tiny model's 2,048-byte tokens in 128-token
/// blocks on CPU (`--block-size` is not set there, so the GPU's 16 applies: the same count). Without a GPU or
/// `--gpu-memory` it says how to get one; a bad size is a usage error.
#[test]
fn plan_predicts_the_kv_pool_from_the_model_folder() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/cpu/kv_scaling.yaml");
    let (code, out, err) = servelab(&["plan", spec.to_str().unwrap(), "--gpu-memory", "139.8GiB"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("capacity (predicted on 139.80 GiB"), "{out}");
    assert!(out.contains("KV pool 1.00 GiB per GPU, 524288 tokens, 1024.0 requests at full length"), "{out}");
    assert!(out.contains("kv_cache_memory_bytes") && out.contains("safetensors tensors / 1 rank(s)"), "{out}");
    let (code, _, err) = servelab(&["plan", spec.to_str().unwrap(), "--gpu-memory", "lots"]);
    assert_ne!(code, 0);
    assert!(err.contains("139.8GiB"), "{err}");
}

/// A spec that is a device is refused before anything is read from it, with exit 2.
#[test]
fn a_spec_that_is_a_device_is_refused_unread() {
    let started = std::time::Instant::now();
    let (code, _, err) = servelab(&["validate", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/dev/zero"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Eight axes of 100 values (10^16 points) are counted and refused before anything is expanded, with the
/// grid's place in the file, in `validate`, `plan` and `run` alike.
#[test]
fn a_grid_that_explodes_is_refused_before_it_is_expanded() {
    let axes: Vec<String> = (0..8)
        .map(|i| format!("  a{i}: [{}]", (0..100).map(|j| j.to_string()).collect::<Vec<_>>().join(", ")))
        .collect();
    let vars: String = (0..8).map(|i| format!("{{{{ a{i} }}}}")).collect();
    let text =
        format!("name: bomb\nengine:\n  kind: command\n  command: [\"x\", \"{vars}\"]\ngrid:\n{}\n", axes.join("\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    for cmd in [vec!["validate", p], vec!["plan", p], vec!["run", p, "--out", dir.path().to_str().unwrap()]] {
        let (code, _, err) = servelab(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(err.contains("bomb.yaml:6:3") && err.contains("10000000000000000 runs"), "{cmd:?}: {err}");
    }
}

/// A server that answers with a redirect: `bench` follows nothing, says where it pointed, sends the API key
/// nowhere else, and exits 3; a URL that is not one exits 2.
#[test]
fn bench_follows_no_redirect_and_refuses_a_url_that_is_not_one() {
    use std::io::{Read, Write};
    let (code, _, err) = servelab(&["bench", "--url", "notaurl"]);
    assert_eq!(code, 2, "{err}");
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}/stolen", elsewhere.local_addr().unwrap());
    elsewhere.set_nonblocking(true).unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let location = target.clone();
    std::thread::spawn(move || {
        for stream in server.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 65536];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let reply = if head.starts_with("GET /v1/models") {
                let body = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            };
            // A client that hung up early is the client's business; the test checks what it received.
            s.write_all(reply.as_bytes()).ok();
        }
    });
    let out = tempfile::tempdir().unwrap();
    let (code, _, err) = servelab(&[
        "bench",
        "--url",
        &url,
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--warmup",
        "0",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("redirected to {target}")), "{err}");
    assert!(elsewhere.accept().is_err(), "a request followed the redirect");
}

/// Output that cannot be written fails the command with exit 7; a closed pipe is a quiet success.
#[test]
fn a_full_disk_on_stdout_exits_7_and_a_closed_pipe_exits_0() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_servelab")).arg("schema").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the output to stdout"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_servelab"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
