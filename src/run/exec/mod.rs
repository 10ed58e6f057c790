//! The executor's loop: asks the schedule for every step that may run now, begins each one that has a free
//! slot, waits for whichever is in flight to come back, and applies it. It is the one writer of the run
//! folder — every journal line, record and derived file is written here, between steps — so groups in
//! flight at once share one journal and each point is committed exactly once.

mod commit;
mod steps;

use super::load::{self, PointOutput};
use super::seam::{Driver, Engine, Measured};
use super::{RunError, capacity, model_facts};
use crate::plan::slots::{Lease, Pool};
use crate::plan::{Point, ServerGroup};
use crate::probe::MemoryProbe;
use crate::record::capacity::Capacity;
use crate::record::folder::{MANIFEST, POINTS, REQUESTS, SAMPLES};
use crate::record::io::{append_jsonl, json_pretty, write_atomic};
use crate::record::journal::{self, Journal};
use crate::record::manifest::Manifest;
use crate::record::{Recorded, ServerRecord, Status};
use crate::schedule::{DoneReason, Schedule, Session, SkipWhy, Step, StopWhy};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use steps::{load_label, set_refused_start_aside, vllm_changed};

/// What the loop reads and never changes.
pub(super) struct Env<'a> {
    pub dir: &'a Path,
    pub spec: &'a crate::spec::Spec,
    pub progress: &'a super::progress::Progress,
    pub journal: &'a Journal,
    pub probe: &'a dyn MemoryProbe,
    pub interrupted: &'a AtomicBool,
    pub resume: bool,
    pub force: bool,
    /// What the host lends the run at once.
    pub host: &'a crate::plan::slots::Host,
    pub templates: Option<PathBuf>,
    /// Added to every server's slot number for its port: shard I of a run starts its ports I × slots above
    /// the spec's, so shards that share a node never share a port (ids do not change with ports).
    pub port_offset: usize,
}

/// A group's server as its slot runs it (port, GPUs, cores), shared by the steps in flight on it.
type Slotted = std::sync::Arc<ServerGroup>;

/// What comes back from a step in flight.
enum Event<S> {
    Started { group: String, result: Result<(S, Option<Result<usize, super::load::WarmupError>>), ServerRecord> },
    Measured { group: String, point: String, attempt: u32, server: S, m: Measured },
    Stopped { group: String, record: ServerRecord },
}

type Flight<'a, S> = Pin<Box<dyn Future<Output = Event<S>> + 'a>>;

/// The loop's own state besides the records: the schedule's session, the servers between steps, and the
/// first write error (after which every server is stopped and the run ends with it).
struct Books<S> {
    session: Session,
    servers: BTreeMap<String, S>,
    model: BTreeMap<String, String>,
    predicted: BTreeMap<String, Option<Capacity>>,
    /// Warnings of a start before its server ran (an earlier attempt's files not set aside), for its record.
    warnings: BTreeMap<String, Vec<String>>,
    ordinal: BTreeMap<String, (usize, usize)>,
    attempts: BTreeMap<String, u32>,
    failure: Option<RunError>,
    pool: Pool,
    /// Each running group's share of the host and its server as that share runs it.
    leases: BTreeMap<String, (Lease, Slotted)>,
    /// For each group measuring a point: the most other servers up at once since the point began, and
    /// whether one of them had a GPU behind the same PCIe switch.
    beside: BTreeMap<String, (usize, bool)>,
    /// The vLLM version the run was recorded under (None until a server reported one).
    vllm: Option<String>,
    /// Groups whose server reported another vLLM on resume: stopped without measuring anything.
    refused: std::collections::BTreeSet<String>,
    /// The number an earlier start's files were kept under (`startup-N.json`) when this start began.
    archived: BTreeMap<String, u32>,
}

const DEAD: &str = "the server died during this point";

pub(super) struct Exec<'a, E, D> {
    pub env: Env<'a>,
    pub engine: &'a E,
    pub driver: &'a D,
    pub schedule: &'a Schedule<'a>,
}

impl<'a, E, D> Exec<'a, E, D>
where
    E: Engine,
    D: Driver<Server = E::Server>,
{
    /// Runs the schedule to its end (done, interrupted, or the first write error, after every server was
    /// stopped).
    pub async fn run(
        &self,
        state: &journal::State,
        manifest: &mut Manifest,
        rec: &mut Recorded,
    ) -> Result<(), RunError> {
        let mut b = Books {
            session: Session::default(),
            servers: BTreeMap::new(),
            model: BTreeMap::new(),
            predicted: BTreeMap::new(),
            warnings: BTreeMap::new(),
            ordinal: BTreeMap::new(),
            attempts: state.attempts.clone(),
            failure: None,
            pool: Pool::new(self.env.host),
            leases: BTreeMap::new(),
            beside: BTreeMap::new(),
            vllm: manifest.vllm_version.clone(),
            refused: Default::default(),
            archived: BTreeMap::new(),
        };
        let env = &self.env;
        for g in self.schedule.finished_groups(rec) {
            let (i, n) = self.schedule.ordinal(&g.id, &b.session);
            env.progress.line(&format!("server {}/{n} {}: every point already measured, not started", i + 1, g.id));
            env.progress.points_done(self.schedule.expected_in(g));
        }
        let mut flights: Vec<Flight<'a, E::Server>> = Vec::new();
        loop {
            b.session.interrupted = env.interrupted.load(Ordering::SeqCst) || b.failure.is_some();
            let mut moved = false;
            let mut done = None;
            for step in self.schedule.next_steps(rec, &b.session) {
                let begun = match step {
                    Step::Done { reason } => {
                        done = Some(reason);
                        break;
                    }
                    Step::StartGroup { group, points } => self.start(&mut b, &group, points, &mut flights),
                    Step::Measure { group, point, .. } => self.measure(&mut b, &group, &point, &mut flights, rec),
                    Step::Skip { group, point, repeat, why } => {
                        self.skip(&mut b, &group, &point, repeat, why);
                        Ok(true)
                    }
                    Step::StopGroup { group, why } => self.stop(&mut b, &group, &why, &mut flights),
                };
                match begun {
                    Ok(m) => moved |= m,
                    Err(e) => fail(&mut b, e),
                }
            }
            if let Some(reason) = done {
                self.announce(&reason);
                break;
            }
            if moved {
                continue;
            }
            if flights.is_empty() {
                // Nothing in flight and nothing to begin: the schedule would have said done.
                break;
            }
            let event = next_event(&mut flights).await;
            if let Err(e) = self.apply(&mut b, event, manifest, rec) {
                fail(&mut b, e);
            }
        }
        match b.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn group(&self, id: &str) -> Result<&'a ServerGroup, RunError> {
        self.schedule
            .group(id)
            .ok_or_else(|| RunError::Internal(format!("the schedule named group {id}, which the plan lacks")))
    }

    fn point(&self, group: &str, id: &str) -> Result<&'a Point, RunError> {
        self.schedule
            .point(group, id)
            .ok_or_else(|| RunError::Internal(format!("the schedule named point {id}, which group {group} lacks")))
    }

    fn label(&self, b: &Books<E::Server>, group: &str) -> (usize, usize) {
        b.ordinal.get(group).copied().unwrap_or((0, 0))
    }

    fn announce(&self, reason: &DoneReason) {
        let progress = self.env.progress;
        match reason {
            DoneReason::MaxStarts { starts } if self.schedule.plan.tune.is_some() => progress.line(&format!(
                "tune: stopping after {starts} server starts (--max-starts); `servelab tune SPEC --resume {}` goes on",
                self.env.dir.display()
            )),
            DoneReason::AskedAgain { group } => {
                progress.line(&format!("tune: asked again for server {group}; the tune stops here"))
            }
            _ => {}
        }
    }

    fn apply(
        &self,
        b: &mut Books<E::Server>,
        event: Event<E::Server>,
        manifest: &mut Manifest,
        rec: &mut Recorded,
    ) -> Result<(), RunError> {
        match event {
            Event::Started { group, result: Ok((server, warmed)) } => {
                let record = self.engine.record(&server);
                let version = record.version.clone();
                let g = self.group(&group)?;
                let model = g.server.served_model_name.clone().or(record.served_model.clone()).unwrap_or_default();
                b.model.insert(group.clone(), model);
                match warmed {
                    Some(Ok(n)) => self.env.progress.line(&format!(
                        "  server warmup: {n} requests in {:.0} s (not measured)",
                        self.env.spec.load.as_ref().map_or(0.0, |l| l.server_warmup.0.as_secs_f64())
                    )),
                    Some(Err(e)) => self.env.progress.line(&format!("  server warmup did not run: {e}")),
                    None => {}
                }
                b.servers.insert(group.clone(), server);
                b.session.started_as(&group, Ok(()));
                // Before the schedule can measure anything on it: a refusal stops it with nothing journaled.
                self.check_version(b, manifest, &group, version)
            }
            Event::Started { group, result: Err(record) } => {
                let (i, n) = self.label(b, &group);
                let why = record.error.as_deref().unwrap_or("");
                self.env.progress.line(&format!("server {}/{n}: {}: {why}", i + 1, record.status.as_str()));
                let points = b.session.active(&group).map(|s| s.points.clone()).unwrap_or_default();
                self.env.progress.points_done(points.len());
                let g = self.group(&group)?;
                for p in g.points.iter().filter(|p| p.client.is_some() && points.contains(&p.id)) {
                    self.point_done(b, g, p, record.status)?;
                }
                b.session.started_as(&group, Err(record.status == Status::Failed));
                self.finish_group(b, g, record, manifest, rec)
            }
            Event::Measured { group, point, attempt, server, m } => {
                b.servers.insert(group.clone(), server);
                let (g, p) = (self.group(&group)?, self.point(&group, &point)?);
                let mut out = m.out;
                out.point.attempt = attempt;
                self.commit(b, g, p, out, m.died, rec)
            }
            Event::Stopped { group, record } => {
                let g = self.group(&group)?;
                b.session.stopped(&group, record.status == Status::Failed);
                self.finish_group(b, g, record, manifest, rec)
            }
        }
    }
}

/// Keeps the first error; the loop then stops every server and ends with it.
fn fail<S>(b: &mut Books<S>, e: RunError) {
    if b.failure.is_none() {
        b.failure = Some(e.during_run());
    }
}

/// Whichever step in flight comes back first.
async fn next_event<S>(flights: &mut Vec<Flight<'_, S>>) -> Event<S> {
    std::future::poll_fn(|cx| {
        for i in 0..flights.len() {
            if let Poll::Ready(event) = flights[i].as_mut().poll(cx) {
                drop(flights.swap_remove(i));
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    })
    .await
}

fn now() -> String {
    chrono::Local::now().to_rfc3339()
}
