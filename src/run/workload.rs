//! What a point sends: its workload (prompts and lengths) built from the planned client, checked for every
//! distinct workload before any server starts, and the chat trace's bound counted on the prompts it sends.

use crate::load::client::RequestSpec;
use crate::load::error::WorkloadError;
use crate::load::prompt::{self, Source, TextItem, Workload};
use crate::load::text::TextMaker;
use crate::plan::{ClientConfig, ServerGroup};
use crate::record::PointRecord;
use crate::record::plan::Endpoint;
use std::path::Path;
use std::sync::Arc;

/// The prompts and lengths of a point: random ids below the vocabulary, exact-length text, the lines of a
/// text file, or a dataset's sample.
pub fn workload_for(
    c: &ClientConfig,
    model_dir: Option<&Path>,
    model_vocab: Option<u64>,
) -> Result<Workload, WorkloadError> {
    let vocab = c.vocab_size.or(model_vocab).unwrap_or(1000);
    let base = Workload {
        source: Source::Ids { shared_prefix: c.shared_prefix_tokens, vocab },
        fixed: (c.prompt_tokens, c.max_tokens),
        prompt_dist: c.prompt_dist,
        output_dist: c.output_dist,
        context: c.context_limit,
        seed: c.seed,
    };
    if let Some(t) = &c.trace {
        let mut source = trace_source(t, vocab)?;
        if c.endpoint == Endpoint::Chat
            && let Source::Trace { maker, .. } = &mut source
        {
            let dir = model_dir.ok_or(WorkloadError::ChatTraceNeedsLocalModel)?;
            *maker = Some(memo::maker(dir)?);
        }
        return Ok(Workload { source, ..base });
    }
    if let Some(plan) = c.sessions {
        let dir = model_dir.ok_or(WorkloadError::SessionsNeedLocalModel)?;
        let output =
            c.output_dist.unwrap_or(crate::record::plan::LengthDist::Uniform { min: c.max_tokens, max: c.max_tokens });
        let sessions = crate::load::session::Sessions { plan, maker: memo::maker(dir)?, output, seed: c.seed };
        return Ok(Workload { source: Source::Sessions(Arc::new(sessions)), ..base });
    }
    let chat = c.endpoint == Endpoint::Chat;
    // The chat endpoint's template adds its own tokens (reported as its overhead); completions add BOS.
    let specials = |m: &TextMaker| if chat { 0 } else { m.specials() };
    if let Some(d) = &c.dataset {
        let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
        let (items, _) = memo::dataset(d, c.seed, maker.as_deref(), c.context_limit)?;
        let specials = maker.as_deref().map_or(0, specials);
        return Ok(Workload { source: Source::Items { items, random: true, specials }, ..base });
    }
    if let Some(file) = &c.prompts_file {
        let text =
            std::fs::read(file).map_err(|source| WorkloadError::PromptsFileRead { path: file.clone(), source })?;
        // Token counts when the model's tokenizer is at hand; else the server's count stands alone.
        let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
        let items: Vec<TextItem> = String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| TextItem {
                text: l.to_owned(),
                tokens: maker.as_ref().and_then(|m| m.count(l, false)),
                output: None,
            })
            .collect();
        if items.is_empty() {
            return Err(WorkloadError::PromptsFileEmpty { path: file.clone() });
        }
        let specials = maker.as_deref().map_or(0, specials);
        return Ok(Workload { source: Source::Items { items: Arc::new(items), random: false, specials }, ..base });
    }
    if c.text_prompts || chat {
        let dir = model_dir.ok_or(WorkloadError::NeedsLocalModel)?;
        let maker = memo::maker(dir)?;
        let specials = specials(&maker);
        return Ok(Workload {
            source: Source::Text { maker, shared_prefix: c.shared_prefix_tokens, specials },
            ..base
        });
    }
    Ok(base)
}

/// A planned trace's window, read again (once per process) and checked to be the content that was planned.
fn trace_source(t: &crate::record::trace::TracePlan, vocab: u64) -> Result<Source, WorkloadError> {
    let window = crate::record::tracefile::read_shared(Path::new(&t.path), t.format, &t.select)?;
    if window.content != t.content {
        return Err(WorkloadError::TraceChanged {
            path: t.path.clone(),
            then: t.content.clone(),
            now: window.content.clone(),
        });
    }
    let speedup = t.schedule.is_timestamps().then_some(t.speedup);
    Ok(Source::Trace { window, vocab, speedup, maker: None })
}

/// What a trace replay's window holds, for the console before any server starts.
fn trace_note(c: &ClientConfig, t: &crate::record::trace::TracePlan, vocab: u64, max_rank: u32) -> String {
    let pct = |b: &crate::record::trace::PrefixBound| {
        b.rate().map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
    };
    let pace = match (t.schedule, &c.open_loop) {
        (crate::record::trace::TraceSchedule::Rate, Some(o)) => {
            format!("sent in trace order at {} requests/s ({:?} arrivals; timestamps not used)", o.rate, o.arrival)
                .to_lowercase()
        }
        _ => format!("at speedup {} ({:.2} requests/s)", t.speedup, t.mean_rate()),
    };
    let mut note = format!(
        "trace {} (content {}): {} requests over {:.1} s of trace {pace}; {} prompts and {} outputs capped; \
         prefix-cache bound {} in blocks of {} tokens ({} without caps; the report counts the server's block size)",
        t.path,
        t.content,
        t.requests,
        t.found.span_s,
        t.found.capped_input,
        t.found.capped_output,
        t.bound_at(16, true).map_or_else(|| "-".to_owned(), |b| pct(&b)),
        16,
        t.bound_at(16, false).map_or_else(|| "-".to_owned(), |b| pct(&b))
    );
    if u64::from(max_rank) + 16 >= vocab {
        note.push_str(&format!(
            "; warning: a prefix of the window is followed by {} distinct blocks, more than the {vocab} token ids \
             tell apart by their first token, so some prompts share one token more than their ids say",
            max_rank + 1
        ));
    }
    note
}

/// Builds each distinct workload of the plan once, before any server starts: a dataset that is empty, has a
/// bad line or no usable entry, or whose every prompt is too long, a prompts file with no line, and a model
/// folder whose `tokenizer.json` does not parse all stop the run here (exit 2) rather than at its first point.
/// The samples are kept for the run. Returns a line per dataset saying what was left out.
pub fn check_workloads(plan: &crate::record::plan::Plan) -> Result<Vec<String>, WorkloadError> {
    let mut seen = std::collections::HashSet::new();
    let mut notes = Vec::new();
    for g in &plan.groups {
        let model_dir = g.server.model.as_deref().map(Path::new).filter(|m| m.is_dir());
        if let Some(dir) = model_dir
            && seen.insert(format!("tokenizer\0{}", dir.display()))
            && dir.join("tokenizer.json").is_file()
        {
            crate::load::text::check_tokenizer(dir)?;
        }
        for c in g.points.iter().filter_map(|p| p.client.as_ref()) {
            if let Some(t) = &c.trace {
                let vocab = c.vocab_size.unwrap_or(1000);
                let Source::Trace { window, .. } = trace_source(t, vocab)? else { continue };
                if c.endpoint == Endpoint::Chat {
                    // Text needs the tokenizer, the bound the template: both found before any server starts.
                    workload_for(c, model_dir, None)?;
                    crate::load::trace::ChatTemplate::find(&g.server.argv, model_dir.unwrap_or(Path::new(".")))?;
                }
                let note = trace_note(c, t, c.vocab_size.unwrap_or(u64::MAX), window.max_rank);
                if !notes.contains(&note) {
                    notes.push(note);
                }
                continue;
            }
            let needs_text =
                c.dataset.is_some() || c.prompts_file.is_some() || c.text_prompts || c.endpoint == Endpoint::Chat;
            let key = serde_json::to_string(&(c, model_dir)).map_err(WorkloadError::Key)?;
            if !needs_text || !seen.insert(key) {
                continue;
            }
            workload_for(c, model_dir, None)?;
            if let Some(d) = &c.dataset {
                let maker = model_dir.and_then(|dir| memo::maker(dir).ok());
                let (_, t) = memo::dataset(d, c.seed, maker.as_deref(), c.context_limit)?;
                let note = format!(
                    "dataset {}: {} usable entries, {} left out while reading (no prompt or reply, an odd record, \
                     an output of 0 tokens); {} sampled, {} of them left out as longer than max-model-len {}",
                    d.path,
                    t.seen,
                    t.skipped,
                    t.kept + t.too_long,
                    t.too_long,
                    c.context_limit.map_or_else(|| "(unknown)".to_owned(), |l| l.to_string())
                );
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    Ok(notes)
}

/// Tokenizers and dataset samples, loaded once per process: a run's points share them, and a dataset of
/// hundreds of MB is streamed once rather than once per point.
mod memo {
    use crate::load::dataset;
    use crate::load::error::WorkloadError;
    use crate::load::prompt::TextItem;
    use crate::load::text::TextMaker;
    use crate::record::plan::Dataset;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, LazyLock, Mutex};

    type Memo<K, V> = LazyLock<Mutex<HashMap<K, V>>>;
    static MAKERS: Memo<PathBuf, Arc<TextMaker>> = LazyLock::new(Default::default);
    static DATASETS: Memo<String, (Arc<Vec<TextItem>>, Tally)> = LazyLock::new(Default::default);

    pub fn maker(dir: &Path) -> Result<Arc<TextMaker>, WorkloadError> {
        let mut memo = MAKERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = memo.get(dir) {
            return Ok(m.clone());
        }
        let m = Arc::new(TextMaker::load(dir)?);
        memo.insert(dir.to_owned(), m.clone());
        Ok(m)
    }

    /// What a dataset's sampling kept and left out, for the console.
    #[derive(Clone, Copy, Debug)]
    pub struct Tally {
        /// Usable entries in the file.
        pub seen: u64,
        /// Entries left out while reading: no prompt or reply, an odd record, an output length of 0.
        pub skipped: u64,
        /// Sampled entries left out because their prompt leaves no room in max-model-len.
        pub too_long: usize,
        pub kept: usize,
    }

    /// A dataset's sample as text items, without the entries whose prompt leaves no room in `context`.
    pub fn dataset(
        d: &Dataset,
        seed: u64,
        maker: Option<&TextMaker>,
        context: Option<u32>,
    ) -> Result<(Arc<Vec<TextItem>>, Tally), WorkloadError> {
        let key = format!("{}\0{:?}\0{}\0{seed}\0{context:?}\0{}", d.path, d.format, d.samples, maker.is_some());
        let mut memo = DATASETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = memo.get(&key) {
            return Ok(hit.clone());
        }
        let sampled = dataset::sample(Path::new(&d.path), d.format, d.samples, seed, maker)?;
        let drawn = sampled.entries.len();
        let items: Vec<TextItem> = sampled
            .entries
            .into_iter()
            .map(|e| TextItem {
                tokens: maker.and_then(|m| m.count(&e.prompt, false)),
                text: e.prompt,
                output: Some(e.output_tokens),
            })
            .filter(|i| match (i.tokens, context) {
                (Some(t), Some(limit)) => t + maker.map_or(0, TextMaker::specials) < limit,
                _ => true,
            })
            .collect();
        if items.is_empty() {
            let limit = context.map_or_else(|| "the server's".to_owned(), |c| c.to_string());
            return Err(WorkloadError::AllTooLong { path: d.path.clone(), drawn, limit });
        }
        let tally =
            Tally { seen: sampled.seen, skipped: sampled.skipped, too_long: drawn - items.len(), kept: items.len() };
        let hit = (Arc::new(items), tally);
        memo.insert(key, hit.clone());
        Ok(hit)
    }
}

/// A trace on the chat endpoint: the prefix-cache bound on the prompts the measured phase will send, counted
/// before it starts (the planner cannot tokenize) and recorded with the point for the report.
pub(super) fn chat_trace_bound(
    spec: &RequestSpec,
    group: &ServerGroup,
    record: &mut PointRecord,
) -> Result<(), crate::load::error::ChatTemplateError> {
    let Source::Trace { window, maker: Some(maker), .. } = &spec.workload.source else { return Ok(()) };
    let model_dir = group.server.model.as_deref().map(Path::new).unwrap_or(Path::new("."));
    let template = crate::load::trace::ChatTemplate::find(&group.server.argv, model_dir)?;
    let salt = prompt::salt(&format!("{}/{}", record.point, record.attempt));
    record.trace_sent =
        Some(crate::load::trace::sent_bounds(window, spec.workload.seed, salt, maker, template.as_ref())?);
    record.trace_sent_template = Some(template.is_some());
    Ok(())
}
