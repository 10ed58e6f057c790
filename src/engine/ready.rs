//! Readiness: poll the ready URL (vLLM: /health) until 200, then /v1/models; fail at once when the process
//! exits, with vLLM's own failure line and the log tail. Then read what the server says about itself.

use super::EngineError;
use super::logparse::{failure_line, tail};
use super::process::ServerProcess;
use crate::plan::ServerConfig;
use crate::probe::metrics;
use crate::spec::EngineKind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Default)]
pub struct ReadyInfo {
    pub ready_s: f64,
    /// `max_model_len` from /v1/models (vLLM lists it per model).
    pub served_max_model_len: Option<u64>,
    pub served_model: Option<String>,
}

async fn get_ok(http: &reqwest::Client, url: &str) -> Option<reqwest::Response> {
    get_ok_auth(http, url, None).await
}

async fn get_ok_auth(http: &reqwest::Client, url: &str, api_key: Option<&str>) -> Option<reqwest::Response> {
    let mut req = http.get(url).timeout(Duration::from_secs(5));
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.ok()?;
    resp.status().is_success().then_some(resp)
}

/// Waits until the server serves. `tick` runs every poll (the caller samples memory there).
pub async fn wait_ready(
    server: &mut ServerProcess,
    cfg: &ServerConfig,
    log_path: &Path,
    http: &reqwest::Client,
    interrupted: &AtomicBool,
    api_key: Option<&str>,
    mut tick: impl FnMut(&mut ServerProcess),
) -> Result<ReadyInfo, EngineError> {
    let timeout = Duration::from_secs_f64(cfg.ready_timeout_s);
    let log = log_path.display().to_string();
    loop {
        tick(server);
        if let Some(status) = server.exited() {
            // Let the last lines through the pipe before reading them.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = server.log.text();
            let failure =
                failure_line(&text).unwrap_or_else(|| format!("exited with {status} and no error line in the log"));
            return Err(EngineError::ExitedEarly { status: status.to_string(), failure, log, tail: tail(&text, 15) });
        }
        if server.started.elapsed() > timeout {
            let text = server.log.text();
            return Err(EngineError::NotReady { timeout, url: cfg.ready_url.clone(), log, tail: tail(&text, 15) });
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted);
        }
        if get_ok(http, &cfg.ready_url).await.is_some() {
            let models = match cfg.kind {
                EngineKind::Vllm => get_ok_auth(http, &format!("{}/v1/models", cfg.base_url), api_key).await,
                _ => None,
            };
            if cfg.kind != EngineKind::Vllm || models.is_some() {
                let ready_s = server.started.elapsed().as_secs_f64();
                let body: Value = match models {
                    Some(r) => crate::probe::json_capped(r, crate::probe::MAX_SMALL_BODY).await,
                    None => Value::Null,
                };
                let first = &body["data"][0];
                return Ok(ReadyInfo {
                    ready_s,
                    served_max_model_len: first["max_model_len"].as_u64(),
                    served_model: first["id"].as_str().map(str::to_owned),
                });
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What a ready server reports: `/version` and `vllm:cache_config_info` from /metrics.
pub async fn server_facts(
    http: &reqwest::Client,
    base_url: &str,
) -> (Option<String>, Option<BTreeMap<String, String>>) {
    let version = match get_ok(http, &format!("{base_url}/version")).await {
        Some(r) => {
            crate::probe::json_capped(r, crate::probe::MAX_SMALL_BODY).await["version"].as_str().map(str::to_owned)
        }
        None => None,
    };
    let info = match get_ok(http, &format!("{base_url}/metrics")).await {
        Some(r) => crate::probe::body_capped(r, crate::probe::MAX_METRICS_BODY)
            .await
            .ok()
            .and_then(|b| metrics::cache_config_info(&metrics::parse(&String::from_utf8_lossy(&b)))),
        None => None,
    };
    (version, info)
}

/// Err when something already listens on the server's port: a clear message before starting.
pub fn check_port_free(host: &str, port: u16) -> Result<(), EngineError> {
    match std::net::TcpListener::bind((host, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(EngineError::PortInUse { host: host.to_owned(), port })
        }
        Err(_) => Ok(()), // e.g. a host name that does not resolve here: the server's own error is clearer
    }
}
