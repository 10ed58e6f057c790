//! What the loop writes when a step comes back: a point's records and the journal line that commits them, a
//! group's end, and the vLLM version check on resume.

use super::*;

impl<'a, E, D> Exec<'a, E, D>
where
    E: Engine,
    D: Driver<Server = E::Server>,
{
    /// Commits one point's records: records first, then the journal line that commits them (a crash in
    /// between leaves them uncommitted).
    pub(super) fn commit(
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

    pub(super) fn point_done(
        &self,
        b: &mut Books<E::Server>,
        g: &ServerGroup,
        p: &Point,
        status: Status,
    ) -> Result<(), RunError> {
        let attempt = b.attempts.get(&p.id).copied().unwrap_or(0);
        b.attempts.insert(p.id.clone(), attempt + 1);
        let (point, group) = (p.id.clone(), g.id.clone());
        let entry = journal::Entry::PointDone { point, group, attempt, status, at: now(), requests: None };
        Ok(self.env.journal.append(&entry)?)
    }

    /// A server start is over (stopped, or never ready): its startup-only points are committed, its record
    /// written, the manifest and the derived files brought up to date.
    pub(super) fn finish_group(
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
        crate::record::io::write_doc(&self.env.dir.join(MANIFEST), &json_pretty(manifest))?;
        crate::run::write_derived(self.env.dir, self.env.spec, manifest, rec, self.env.templates.clone())
    }

    /// On resume, a vLLM other than the recorded one refuses the run (unless `--force`): checked as soon as
    /// the server is up, so no point is measured or journaled under the new version. Otherwise the first
    /// version a server reports becomes the run's.
    pub(super) fn check_version(
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

/// A point whose measured requests failed beyond `max_error_rate` fails (its records stay: failures are data).
pub(super) fn fail_on_errors(point: &mut crate::record::PointRecord, requests: &[crate::record::RequestRecord]) {
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
pub(super) fn known_fix(message: &str) -> Option<&'static str> {
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
