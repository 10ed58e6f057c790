//! The steps the loop begins: a server start (leasing its slot), a point's measurement, a skip and a stop.

use super::*;

impl<'a, E, D> Exec<'a, E, D>
where
    E: Engine,
    D: Driver<Server = E::Server>,
{
    /// Begins a server start when a slot is free. Returns whether it began.
    pub(super) fn start(
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
        self.one_more_beside(b);
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
        flights.push(self.start_flight(slotted, server_dir, recorded, warm, (i, n)));
        Ok(true)
    }

    /// Every point being measured now has one more server beside it.
    fn one_more_beside(&self, b: &mut Books<E::Server>) {
        let others = b.leases.len() - 1;
        let measuring: Vec<String> = b.beside.keys().cloned().collect();
        for g in measuring {
            let near = self.near(b, &g);
            if let Some((n, shared)) = b.beside.get_mut(&g) {
                *n = (*n).max(others);
                *shared |= near;
            }
        }
    }

    /// The start in flight: the server started, then warmed up unless it reported another vLLM than the
    /// `recorded` one.
    fn start_flight(
        &self,
        slotted: Slotted,
        server_dir: PathBuf,
        recorded: Option<String>,
        warm: bool,
        (i, n): (usize, usize),
    ) -> Flight<'a, E::Server> {
        let (engine, driver, progress) = (self.engine, self.driver, self.env.progress);
        Box::pin(async move {
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
        })
    }

    /// Begins measuring a point; on a dead server it is recorded as not run at once.
    pub(super) fn measure(
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

    pub(super) fn skip(&self, b: &mut Books<E::Server>, group: &str, point: &str, repeat: u32, why: SkipWhy) {
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

    pub(super) fn stop(
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
    pub(super) fn slotted(&self, g: &ServerGroup, lease: &Lease) -> Result<Slotted, RunError> {
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
    pub(super) fn near(&self, b: &Books<E::Server>, group: &str) -> bool {
        let Some((mine, _)) = b.leases.get(group) else { return false };
        let others: Vec<crate::plan::slots::Gpu> =
            b.leases.iter().filter(|(g, _)| g.as_str() != group).flat_map(|(_, (l, _))| l.gpus.clone()).collect();
        crate::plan::slots::shares_switch(self.env.host, &mine.gpus, &others)
    }

    /// The group as its running server was started.
    pub(super) fn running_as(&self, b: &Books<E::Server>, g: &ServerGroup) -> Slotted {
        b.leases.get(&g.id).map_or_else(|| std::sync::Arc::new(g.clone()), |(_, s)| s.clone())
    }
}

/// The recorded and the reported vLLM version when both are known and differ.
pub(super) fn vllm_changed<'v>(recorded: Option<&'v str>, reported: Option<&'v str>) -> Option<(&'v str, &'v str)> {
    match (recorded, reported) {
        (Some(old), Some(new)) if old != new => Some((old, new)),
        _ => None,
    }
}

/// The forms a server file takes in a run folder: plain, or packed by `servelab compress` (`.gz`: older folders).
const FORMS: [&str; 3] = ["", ".xz", ".gz"];

/// A start refused for another vLLM leaves the folder as the run recorded it: its log is kept as
/// `server-refused.log`, and the earlier start's files, set aside when it began, go back to their names (a
/// `startup.json` of the refused start would be read as this group's latest start).
pub(super) fn set_refused_start_aside(server_dir: &Path, archived: Option<u32>) -> Result<(), RunError> {
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
    for ext in FORMS {
        let from = server_dir.join(format!("startup-{n}.json{ext}"));
        if from.exists() {
            std::fs::rename(&from, server_dir.join(format!("startup.json{ext}"))).map_err(io(&from))?;
        }
    }
    for ext in FORMS {
        let earlier = server_dir.join(format!("server-{n}.log{ext}"));
        if earlier.exists() {
            let to = server_dir.join(format!("server.log{ext}"));
            std::fs::rename(&earlier, &to).map_err(io(&earlier))?;
        }
    }
    Ok(())
}

/// " on slot 1 (port 8001, GPUs 2,3, cores 4-7)" for the console.
pub(super) fn slot_label(lease: &Lease) -> String {
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
pub(super) fn load_label(c: &crate::plan::ClientConfig) -> String {
    match c.rate() {
        Some(r) => format!("rate={r}/s"),
        None => format!("c={}", c.concurrency),
    }
}

/// Keeps an earlier attempt's server files when a resumed run starts the same server again.
/// A compressed folder (`servelab compress`) holds `startup.json.xz` and `server.log.xz`: they are kept the
/// same way, in their form.
/// Returns the number they were kept under, and the warnings: a rename that fails is a warning (printed, and
/// returned for the new start's record): the new start then overwrites that file, so the earlier attempt's
/// copy is lost, but the measurement is not.
pub(super) fn archive_previous(server_dir: &Path) -> (Option<u32>, Vec<String>) {
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
    for ext in FORMS {
        let log = server_dir.join(format!("server.log{ext}"));
        if log.exists() {
            keep(log, server_dir.join(format!("server-{n}.log{ext}")));
        }
    }
    (Some(n), warnings)
}
