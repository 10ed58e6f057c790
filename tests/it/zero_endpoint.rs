//! The load client against servelab-zero-endpoint (vLLM 0.32's exact SSE framing, no model): streaming and
//! non-streaming modes through `servelab bench`, end to end, in seconds. The real-engine checks are in
//! tests/vllm_cpu.rs.

use std::process::{Child, Command};
use std::time::Duration;

struct Endpoint(Child);

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Cleanup in a drop: an endpoint that exited already needs nothing.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn endpoint(port: u16) -> Endpoint {
    let child =
        Command::new(env!("CARGO_BIN_EXE_servelab-zero-endpoint")).args(["--port", &port.to_string()]).spawn().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Endpoint(child)
}

fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bench_streams_and_does_not_stream() {
    let port = 18520;
    let _server = endpoint(port);
    let out = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for (id, extra) in [("stream", vec![]), ("plain", vec!["--no-stream"])] {
        let mut args = vec![
            "bench",
            "--url",
            &url,
            "--concurrency",
            "1,4",
            "--requests",
            "8",
            "--max-tokens",
            "16",
            "--out",
            out.path().to_str().unwrap(),
            "--run-id",
            id,
        ];
        args.extend(extra.iter().copied());
        let o = Command::new(env!("CARGO_BIN_EXE_servelab")).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let recs: Vec<serde_json::Value> =
            records(&out.path().join("bench").join(id)).into_iter().filter(|r| r["warmup"] == false).collect();
        assert_eq!(recs.len(), 8 + 8, "--requests (--num-prompts) is exact at every level");
        assert!(recs.iter().all(|r| r["completion_tokens"] == 16 && r["error"].is_null()));
        if id == "stream" {
            assert!(recs.iter().all(|r| r["chunks"] == 16 && r["first_token_s"].as_f64().is_some()));
            assert!(
                recs.iter().all(|r| r["chunk_gap_us"].as_array().map(Vec::len) == Some(15)),
                "15 gaps after the first token"
            );
        } else {
            assert!(recs.iter().all(|r| r["first_token_s"].is_null()), "no TTFT without streaming");
        }
    }
}
