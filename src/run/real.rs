//! The seam's real side: servers as processes (`engine`, `probe`), points as HTTP load (`load`).

use super::load;
use super::seam::{Driver, Engine, Measured};
use super::server::{self, Running};
use crate::plan::{Point, ServerGroup};
use crate::probe::MemoryProbe;
use crate::record::ServerRecord;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A ready server process (or an external endpoint) and what its requests name.
pub struct Live {
    running: Running,
    model: String,
    vocab: Option<u64>,
    /// Reads the server's own GPUs when a slot gave it some; the run's probe otherwise.
    probe: Arc<dyn MemoryProbe>,
}

pub struct Processes<'a> {
    pub probe: Arc<dyn MemoryProbe>,
    pub http: &'a reqwest::Client,
    pub interrupted: &'a AtomicBool,
    pub api_key: Option<&'a str>,
}

impl Engine for Processes<'_> {
    type Server = Live;

    async fn start<'s>(&'s self, group: &'s ServerGroup, dir: &'s Path) -> Result<Live, ServerRecord> {
        let (facts, warning) = match super::server::read_model_facts(group) {
            Ok(facts) => (facts, None),
            Err(w) => {
                eprintln!("warning: {w}");
                (None, Some(w))
            }
        };
        let vocab = facts.as_ref().and_then(|f| f.vocab_size);
        let probe = match group.server.gpus.as_slice() {
            [] => self.probe.clone(),
            gpus => self.probe.for_gpus(gpus).map_or_else(|| self.probe.clone(), Arc::from),
        };
        let started = server::start(group, dir, probe.as_ref(), facts, self.http, self.interrupted, self.api_key).await;
        let running = match started {
            Ok(mut running) => {
                running.record.warnings.extend(warning);
                running
            }
            Err(mut record) => {
                record.warnings.extend(warning);
                return Err(record);
            }
        };
        // The spec's model name wins (a `--served-model-name`, or `bench --model`); else what /v1/models lists.
        let model = group.server.served_model_name.clone().or(running.record.served_model.clone()).unwrap_or_default();
        Ok(Live { running, model, vocab, probe })
    }

    async fn stop<'s>(&'s self, server: Live, group: &'s ServerGroup) -> ServerRecord {
        server::stop(server.running, group, server.probe.as_ref(), self.interrupted).await
    }

    fn record<'s>(&self, server: &'s Live) -> &'s ServerRecord {
        &server.running.record
    }
}

pub struct Http<'a> {
    pub load: load::Context<'a>,
    /// `load.server_warmup`.
    pub warm: Duration,
}

impl Driver for Http<'_> {
    type Server = Live;

    async fn warmup<'s>(
        &'s self,
        server: &'s mut Live,
        group: &'s ServerGroup,
    ) -> Option<Result<usize, super::load::WarmupError>> {
        if self.warm.is_zero() {
            return None;
        }
        let ctx = load::Context { probe: server.probe.clone(), ..self.load.clone() };
        Some(load::server_warmup(&ctx, group, &server.model, server.vocab, self.warm).await)
    }

    async fn measure<'s>(
        &'s self,
        server: &'s mut Live,
        group: &'s ServerGroup,
        point: &'s Point,
        attempt: u32,
    ) -> Measured {
        let ctx = load::Context { probe: server.probe.clone(), ..self.load.clone() };
        let out = load::run_point(&ctx, group, point, attempt, &server.model, server.vocab).await;
        let died = out.point.status == crate::record::Status::Ok
            && out.requests.iter().any(|r| !r.ok())
            && !alive(&mut server.running, self.load.http, &group.server.ready_url).await;
        Measured { out, died }
    }
}

/// Whether the server still serves: its leader alive and /health answering.
async fn alive(running: &mut Running, http: &reqwest::Client, ready_url: &str) -> bool {
    if let Some(p) = &mut running.process
        && !p.alive()
    {
        return false;
    }
    // The spec's own readiness URL: an external endpoint may have no /health.
    let health = http.get(ready_url).timeout(Duration::from_secs(5)).send().await;
    health.map(|r| r.status().is_success()).unwrap_or(false)
}
