//! The executor's loop: asks the schedule for every step that may run now, begins each one that has a free
//! slot, waits for whichever is in flight to come back, and applies it. It is the one writer of the run
//! folder — every journal line, record and derived file is written here, between steps — so groups in
//! flight at once share one journal and each point is committed exactly once.

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

    /// Begins a server start when a slot is free. Returns whether it began.
    fn start(
        &self,
        b: &mut Books<E::Server>,
        group: &str,
        points: Vec<String>,
        flights: &mut Vec<Flight<'a, E::Server>>,
    ) -> Result<bool, RunError> {
        let plan_group = self.group(group)?;
        let need = crate::plan::slots::gpus_needed(self.env.spec.engine.gpus, plan_group);
        let Some(lease) = b.pool.lease(need).map_err(|e| RunError::refused(e.to_string()))? else {
            return Ok(false);
        };
        // What can fail before the start gives the lease back.
        let server_dir = self.env.dir.join("servers").join(&plan_group.id);
        let made = self.slotted(plan_group, &lease).and_then(|s| {
            std::fs::create_dir_all(&server_dir)
                .map_err(|source| RunError::Output { path: server_dir.display().to_string(), source })?;
            Ok(s)
        });
        let slotted = match made {
            Ok(s) => s,
            Err(e) => {
                b.pool.release(&lease);
                return Err(e);
            }
        };
        b.leases.insert(group.to_owned(), (lease.clone(), slotted.clone()));
        // Every point being measured now has one more server beside it.
        let others = b.leases.len() - 1;
        let measuring: Vec<String> = b.beside.keys().cloned().collect();
        for g in measuring {
            let near = self.near(b, &g);
            if let Some((n, shared)) = b.beside.get_mut(&g) {
                *n = (*n).max(others);
                *shared |= near;
            }
        }
        let g = plan_group;
        let env = &self.env;
        let (kept_as, warnings) = archive_previous(&server_dir);
        if let Some(n) = kept_as {
            b.archived.insert(group.to_owned(), n);
        }
        b.warnings.insert(group.to_owned(), warnings);
        let warm = points.iter().filter_map(|p| g.points.iter().find(|q| &q.id == p)).any(|p| p.client.is_some());
        b.session.begin(group, points);
        let (i, n) = self.schedule.ordinal(group, &b.session);
        b.ordinal.insert(group.to_owned(), (i, n));
        let vars = crate::record::values::vars_text(&g.vars, " ");
        let place = if env.host.binds() { slot_label(&lease) } else { String::new() };
        env.progress.line(&format!("server {}/{n} {} {vars}: starting{place}", i + 1, g.id));
        env.progress.status(&format!("server {}/{n} starting", i + 1));
        if g.server.kind != crate::spec::EngineKind::External {
            let at = chrono::Local::now().to_rfc3339();
            let slot = env.host.binds().then_some(lease.slot);
            env.journal.append(&journal::Entry::ServerStart { group: g.id.clone(), at, slot })?;
        }
        // The pre-flight prediction, kept beside what the start then shows (GPU engines only: NVML gives the total).
        let predicted = match (g.server.kind, env.probe.cuda_total_bytes()) {
            (crate::spec::EngineKind::Vllm, Some(gpu)) => capacity::predict(g, model_facts(g).as_ref(), gpu).ok(),
            _ => None,
        };
        b.predicted.insert(group.to_owned(), predicted);
        // A resumed run refuses a server of another vLLM (see `check_version`); it is not even warmed up.
        let recorded = if env.resume && !env.force { b.vllm.clone() } else { None };
        let (engine, driver, progress) = (self.engine, self.driver, env.progress);
        flights.push(Box::pin(async move {
            let g = &*slotted;
            let result = match engine.start(g, &server_dir).await {
                Ok(mut server) => {
                    let ready_s = engine.record(&server).ready_s.unwrap_or_default();
                    progress.line(&format!("server {}/{n}: ready in {ready_s:.1} s", i + 1));
                    let changed = vllm_changed(recorded.as_deref(), engine.record(&server).version.as_deref());
                    let warmed = if warm && changed.is_none() {
                        progress.status(&format!("server {}/{n}: warming up", i + 1));
                        driver.warmup(&mut server, g).await
                    } else {
                        None
                    };
                    Ok((server, warmed))
                }
                Err(record) => Err(record),
            };
            Event::Started { group: g.id.clone(), result }
        }));
        Ok(true)
    }

    /// Begins measuring a point; on a dead server it is recorded as not run at once.
    fn measure(
        &self,
        b: &mut Books<E::Server>,
        group: &str,
        point: &str,
        flights: &mut Vec<Flight<'a, E::Server>>,
        rec: &mut Recorded,
    ) -> Result<bool, RunError> {
        let (g, p) = (self.group(group)?, self.point(group, point)?);
        let Some(c) = &p.client else { return Ok(false) };
        let attempt = b.attempts.get(point).copied().unwrap_or(0);
        let at = chrono::Local::now().to_rfc3339();
        let entry = journal::Entry::PointStart { point: p.id.clone(), group: g.id.clone(), attempt, at };
        self.env.journal.append(&entry)?;
        b.attempts.insert(point.to_owned(), attempt + 1);
        b.session.measuring(group, point);
        let near = self.near(b, group);
        b.beside.insert(group.to_owned(), (b.leases.len().saturating_sub(1), near));
        let start = b.session.active(group);
        let (nth, of) = start.map_or((0, 0), |s| (s.visited.len(), s.points.len()));
        if start.is_some_and(|s| s.dead) {
            let model = b.model.get(group).cloned().unwrap_or_default();
            let out = load::not_run(g, p, attempt, &model, &format!("not run: {DEAD} before it"));
            self.commit(b, g, p, out, false, rec)?;
            return Ok(true);
        }
        let Some(mut server) = b.servers.remove(group) else {
            return Err(RunError::Internal(format!(
                "the schedule measured point {point} on group {group}, which has no server up"
            )));
        };
        let (i, n) = self.label(b, group);
        let of = if self.schedule.plan.search.is_some() { String::new() } else { format!("/{of}") };
        self.env.progress.status(&format!(
            "server {}/{n}: point {nth}{of} {} repeat {}",
            i + 1,
            load_label(c),
            p.repeat
        ));
        let driver = self.driver;
        let slotted = self.running_as(b, g);
        flights.push(Box::pin(async move {
            let m = driver.measure(&mut server, &slotted, p, attempt).await;
            Event::Measured { group: g.id.clone(), point: p.id.clone(), attempt, server, m }
        }));
        Ok(true)
    }

    fn skip(&self, b: &mut Books<E::Server>, group: &str, point: &str, repeat: u32, why: SkipWhy) {
        b.session.skipped(group, point);
        if let (SkipWhy::PrecisionMet { rel_ci }, Ok(p)) = (why, self.point(group, point))
            && let Some(c) = &p.client
        {
            // The cell already meets the precision target and decides nothing close: no further rounds
            // (recomputed on resume).
            self.env.progress.line(&format!(
                "  point {point} {} repeat {repeat}: skipped, the cell meets ±{:.1}% and is clear of the latency budget",
                load_label(c),
                rel_ci * 100.0
            ));
        }
        self.env.progress.points_done(1);
    }

    fn stop(
        &self,
        b: &mut Books<E::Server>,
        group: &str,
        why: &StopWhy,
        flights: &mut Vec<Flight<'a, E::Server>>,
    ) -> Result<bool, RunError> {
        let g = self.group(group)?;
        if let StopWhy::AskedAgain { point } = why {
            self.env.progress.line(&format!("  the search asked again for point {point}; it stops here"));
        }
        b.session.stopping(group);
        let Some(server) = b.servers.remove(group) else {
            if let Some((lease, _)) = b.leases.remove(group) {
                b.pool.release(&lease);
            }
            b.session.stopped(group, false);
            return Ok(true);
        };
        let (i, n) = self.label(b, group);
        self.env.progress.line(&format!("server {}/{n}: stopping", i + 1));
        let engine = self.engine;
        let slotted = self.running_as(b, g);
        flights.push(Box::pin(async move {
            let record = engine.stop(server, &slotted).await;
            Event::Stopped { group: g.id.clone(), record }
        }));
        Ok(true)
    }

    /// The group's server as `lease` runs it; the plan's own group, untouched, without slots.
    fn slotted(&self, g: &ServerGroup, lease: &Lease) -> Result<Slotted, RunError> {
        let offset = if g.server.kind == crate::spec::EngineKind::External { 0 } else { self.env.port_offset };
        if !self.env.host.binds() && offset == 0 {
            return Ok(std::sync::Arc::new(g.clone()));
        }
        let cpu_engine = matches!(self.env.host.lend, crate::plan::slots::Lend::Parallel(_));
        let shifted = Lease { slot: lease.slot + offset, ..lease.clone() };
        let server = crate::plan::server::slotted(self.env.spec, g, &shifted, cpu_engine)
            .map_err(|e| RunError::refused(format!("{} ({})", e.message, e.fix)))?;
        Ok(std::sync::Arc::new(ServerGroup { server, ..g.clone() }))
    }

    /// Whether `group`'s GPUs share a PCIe switch with another slot's GPUs in use now.
    fn near(&self, b: &Books<E::Server>, group: &str) -> bool {
        let Some((mine, _)) = b.leases.get(group) else { return false };
        let others: Vec<crate::plan::slots::Gpu> =
            b.leases.iter().filter(|(g, _)| g.as_str() != group).flat_map(|(_, (l, _))| l.gpus.clone()).collect();
        crate::plan::slots::shares_switch(self.env.host, &mine.gpus, &others)
    }

    /// The group as its running server was started.
    fn running_as(&self, b: &Books<E::Server>, g: &ServerGroup) -> Slotted {
        b.leases.get(&g.id).map_or_else(|| std::sync::Arc::new(g.clone()), |(_, s)| s.clone())
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

    /// Commits one point's records: records first, then the journal line that commits them (a crash in
    /// between leaves them uncommitted).
    fn commit(
        &self,
        b: &mut Books<E::Server>,
        g: &ServerGroup,
        p: &Point,
        mut out: PointOutput,
        died: bool,
        rec: &mut Recorded,
    ) -> Result<(), RunError> {
        if died {
            out.point.status = Status::Failed;
            out.point.error = Some(DEAD.to_owned());
        }
        fail_on_errors(&mut out.point, &out.requests);
        let (beside, shared) = b.beside.remove(&g.id).unwrap_or((0, false));
        out.point.beside = self.env.host.binds().then_some(beside);
        let gpus = matches!(self.env.host.lend, crate::plan::slots::Lend::Gpus(_));
        out.point.switch_shared = gpus.then_some(shared);
        let dir = self.env.dir;
        // Synced like the point record: its journal line says how many there are, and a reader holds it to that.
        append_jsonl(&dir.join(REQUESTS), &out.requests, true)?;
        append_jsonl(&dir.join(SAMPLES), &out.samples, false)?;
        append_jsonl(&dir.join(POINTS), std::slice::from_ref(&out.point), true)?;
        let (point, group, attempt, status) = (p.id.clone(), g.id.clone(), out.point.attempt, out.point.status);
        let requests = Some(out.requests.len() as u32);
        self.env.journal.append(&journal::Entry::PointDone { point, group, attempt, status, at: now(), requests })?;
        let measured: Vec<_> = out.requests.iter().filter(|r| !r.warmup && !r.tail).collect();
        let ok = measured.iter().filter(|r| r.ok()).count();
        let label = p.client.as_ref().map(load_label).unwrap_or_default();
        // With slots, points of several servers interleave on the console: say whose each is.
        let whose =
            if self.env.host.binds() { format!(" (server {})", self.label(b, &g.id).0 + 1) } else { String::new() };
        self.env.progress.line(&format!(
            "  point {}{whose} {label} repeat {}: {} ({ok}/{} ok, {:.1} s){}",
            p.id,
            p.repeat,
            out.point.status,
            measured.len(),
            out.point.wall_s,
            out.point.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ));
        b.session.measured(&g.id, out.point.status == Status::Failed, died);
        rec.points.push(out.point);
        rec.requests.extend(out.requests);
        rec.samples.extend(out.samples);
        self.env.progress.points_done(1);
        Ok(())
    }

    fn point_done(&self, b: &mut Books<E::Server>, g: &ServerGroup, p: &Point, status: Status) -> Result<(), RunError> {
        let attempt = b.attempts.get(&p.id).copied().unwrap_or(0);
        b.attempts.insert(p.id.clone(), attempt + 1);
        let (point, group) = (p.id.clone(), g.id.clone());
        let entry = journal::Entry::PointDone { point, group, attempt, status, at: now(), requests: None };
        Ok(self.env.journal.append(&entry)?)
    }

    /// A server start is over (stopped, or never ready): its startup-only points are committed, its record
    /// written, the manifest and the derived files brought up to date.
    fn finish_group(
        &self,
        b: &mut Books<E::Server>,
        g: &ServerGroup,
        mut record: ServerRecord,
        manifest: &mut Manifest,
        rec: &mut Recorded,
    ) -> Result<(), RunError> {
        record.predicted = b.predicted.remove(&g.id).flatten();
        let archived = b.archived.remove(&g.id);
        if let Some(mut earlier) = b.warnings.remove(&g.id) {
            earlier.append(&mut record.warnings);
            record.warnings = earlier;
        }
        if let Some((lease, slotted)) = b.leases.remove(&g.id) {
            b.pool.release(&lease);
            if self.env.host.binds() {
                record.slot = Some(crate::record::server::SlotRecord {
                    slot: lease.slot,
                    port: slotted.server.port,
                    gpus: lease.gpus.clone(),
                    cpus: lease.cpus.clone(),
                    slots: b.pool.capacity(),
                    idle_mb: lease
                        .gpus
                        .iter()
                        .map(|g| manifest.gpu_idle_mb.get(&g.index).copied())
                        .sum::<Option<f64>>()
                        .filter(|_| !lease.gpus.is_empty()),
                });
                let (group, at) = (g.id.clone(), now());
                self.env.journal.append(&journal::Entry::ServerEnd { group, at, slot: lease.slot })?;
            }
        }
        if b.refused.contains(&g.id) {
            return set_refused_start_aside(&self.env.dir.join("servers").join(&g.id), archived);
        }
        let points =
            b.session.starts.iter().rev().find(|s| s.group == g.id).map(|s| s.points.clone()).unwrap_or_default();
        // A startup-only point is the server start itself.
        for p in g.points.iter().filter(|p| p.client.is_none() && points.contains(&p.id)) {
            self.point_done(b, g, p, record.status)?;
        }
        let server_dir = self.env.dir.join("servers").join(&g.id);
        // The server may log its arguments or environment; its log is the one file servelab did not write itself.
        crate::record::io::redact_file(&server_dir.join("server.log"))?;
        write_atomic(&server_dir.join("startup.json"), &json_pretty(&record))?;
        // In plan order, as a re-render reads them back: with slots, servers end in any order.
        match rec.servers.iter_mut().find(|s| s.id == record.id) {
            Some(old) => rec.earlier_starts.push(std::mem::replace(old, record)),
            None => {
                let order = |id: &str| self.schedule.plan.groups.iter().position(|g| g.id == id);
                let at = rec.servers.iter().position(|s| order(&s.id) > order(&record.id));
                rec.servers.insert(at.unwrap_or(rec.servers.len()), record);
            }
        }
        if let Some(server) = rec.servers.iter().rev().find(|s| s.id == g.id) {
            manifest.vllm_version = manifest.vllm_version.take().or(server.version.clone());
            manifest.model_config_hash =
                manifest.model_config_hash.take().or(server.model.as_ref().map(|m| m.config_hash.clone()));
        }
        write_atomic(&self.env.dir.join(MANIFEST), &json_pretty(manifest))?;
        super::write_derived(self.env.dir, self.env.spec, manifest, rec, self.env.templates.clone())
    }

    /// On resume, a vLLM other than the recorded one refuses the run (unless `--force`): checked as soon as
    /// the server is up, so no point is measured or journaled under the new version. Otherwise the first
    /// version a server reports becomes the run's.
    fn check_version(
        &self,
        b: &mut Books<E::Server>,
        manifest: &mut Manifest,
        group: &str,
        version: Option<String>,
    ) -> Result<(), RunError> {
        if self.env.resume
            && !self.env.force
            && let Some((old, new)) = vllm_changed(manifest.vllm_version.as_deref(), version.as_deref())
        {
            b.refused.insert(group.to_owned());
            let (old, new) = (old.to_owned(), new.to_owned());
            return Err(RunError::VllmChanged { dir: self.env.dir.display().to_string(), old, new });
        }
        if manifest.vllm_version.is_none() {
            manifest.vllm_version = version;
            b.vllm = manifest.vllm_version.clone();
        }
        Ok(())
    }
}

/// The recorded and the reported vLLM version when both are known and differ.
fn vllm_changed<'v>(recorded: Option<&'v str>, reported: Option<&'v str>) -> Option<(&'v str, &'v str)> {
    match (recorded, reported) {
        (Some(old), Some(new)) if old != new => Some((old, new)),
        _ => None,
    }
}

/// A start refused for another vLLM leaves the folder as the run recorded it: its log is kept as
/// `server-refused.log`, and the earlier start's files, set aside when it began, go back to their names (a
/// `startup.json` of the refused start would be read as this group's latest start).
fn set_refused_start_aside(server_dir: &Path, archived: Option<u32>) -> Result<(), RunError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RunError::Output { path, source }
    };
    let log = server_dir.join("server.log");
    if log.exists() {
        crate::record::io::redact_file(&log)?;
        let to = server_dir.join("server-refused.log");
        std::fs::rename(&log, &to).map_err(io(&to))?;
    }
    let Some(n) = archived else { return Ok(()) };
    for ext in ["", ".xz", ".gz"] {
        let from = server_dir.join(format!("startup-{n}.json{ext}"));
        if from.exists() {
            std::fs::rename(&from, server_dir.join(format!("startup.json{ext}"))).map_err(io(&from))?;
        }
    }
    let earlier = server_dir.join(format!("server-{n}.log"));
    if earlier.exists() {
        std::fs::rename(&earlier, &log).map_err(io(&earlier))?;
    }
    Ok(())
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

/// " on slot 1 (port 8001, GPUs 2,3, cores 4-7)" for the console.
fn slot_label(lease: &Lease) -> String {
    let mut parts = Vec::new();
    if !lease.gpus.is_empty() {
        let ids: Vec<String> = lease.gpus.iter().map(|g| g.index.to_string()).collect();
        parts.push(format!("GPUs {}", ids.join(",")));
    }
    if !lease.cpus.is_empty() {
        let ids: Vec<String> = lease.cpus.iter().map(usize::to_string).collect();
        parts.push(format!("cores {}", ids.join(",")));
    }
    let what = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
    format!(" on slot {}{what}", lease.slot)
}

/// "c=8" for a closed loop, "rate=50/s" for an open one.
fn load_label(c: &crate::plan::ClientConfig) -> String {
    match c.rate() {
        Some(r) => format!("rate={r}/s"),
        None => format!("c={}", c.concurrency),
    }
}

/// Keeps an earlier attempt's server files when a resumed run starts the same server again.
/// A compressed folder (`servelab compress`) holds `startup.json.xz`: it is kept the same way.
/// Returns the number they were kept under, and the warnings: a rename that fails is a warning (printed, and
/// returned for the new start's record): the new start then overwrites that file, so the earlier attempt's
/// copy is lost, but the measurement is not.
fn archive_previous(server_dir: &Path) -> (Option<u32>, Vec<String>) {
    const FORMS: [&str; 3] = ["", ".xz", ".gz"];
    let present = |stem: &str| FORMS.iter().any(|ext| server_dir.join(format!("{stem}{ext}")).exists());
    let mut warnings = Vec::new();
    if !present("startup.json") {
        return (None, warnings);
    }
    let n = (1..).find(|n| !present(&format!("startup-{n}.json"))).unwrap_or(1);
    let mut keep = |from: PathBuf, to: PathBuf| {
        let renamed = crate::record::failpoint::io("archive-rename").and_then(|()| std::fs::rename(&from, &to));
        if let Err(e) = renamed {
            let text = format!(
                "cannot keep the earlier attempt's {} as {} ({e}); this start overwrites it",
                from.display(),
                to.display()
            );
            eprintln!("warning: {text}");
            warnings.push(text);
        }
    };
    for ext in FORMS {
        let from = server_dir.join(format!("startup.json{ext}"));
        if from.exists() {
            keep(from, server_dir.join(format!("startup-{n}.json{ext}")));
        }
    }
    // A start that failed before its server ran has no log to keep.
    let log = server_dir.join("server.log");
    if log.exists() {
        keep(log, server_dir.join(format!("server-{n}.log")));
    }
    (Some(n), warnings)
}

/// A point whose measured requests failed beyond `max_error_rate` fails (its records stay: failures are data).
fn fail_on_errors(point: &mut crate::record::PointRecord, requests: &[crate::record::RequestRecord]) {
    let measured: Vec<_> = requests.iter().filter(|r| !r.warmup && !r.tail).collect();
    let failed = measured.iter().filter(|r| !r.ok()).count();
    let limit = point.client.max_error_rate;
    if point.status == Status::Ok && !measured.is_empty() && failed as f64 > limit * measured.len() as f64 {
        point.status = Status::Failed;
        // The first error says why, with the fix where the cause is known.
        let first = measured.iter().find_map(|r| r.error.as_ref()).map_or(String::new(), |e| {
            let message: String = e.message.chars().take(200).collect();
            let fix = known_fix(&e.message).map(|f| format!(" (fix: {f})")).unwrap_or_default();
            format!("; the first: {}: {message}{fix}", String::from(e.kind))
        });
        point.error = Some(format!(
            "{failed} of {} requests failed, more than max_error_rate {:.0}%{first}",
            measured.len(),
            limit * 100.0
        ));
    }
}

/// The fix for a request error whose cause is known from vLLM's (or servelab's) message.
fn known_fix(message: &str) -> Option<&'static str> {
    let m = message.to_lowercase();
    let fixes: [(&[&str], &str); 5] = [
        (
            &["chat template"],
            "give the server a chat template (`engine.args: { chat-template: FILE }`), or use `load.endpoint: completions`",
        ),
        (
            &["maximum context length", "max_model_len", "maximum model length"],
            "shorten prompt_tokens + max_tokens, or raise the server's max-model-len",
        ),
        (
            &["does not exist", "model not found", "unknown model"],
            "name the model as /v1/models lists it (`--served-model-name`, or `engine.model`)",
        ),
        (&["connection refused", "connect"], "the server stopped answering: see its servers/<id>/server.log"),
        (
            &["not a json object", "neither a completion", "without a token"],
            "the endpoint does not serve OpenAI completions: check `engine.base_url` and its path",
        ),
    ];
    fixes.iter().find(|(needles, _)| needles.iter().any(|n| m.contains(n))).map(|(_, fix)| *fix)
}
