//! What was actually sent, per cell (a client configuration against one server, all its repeats): the
//! realised prompt and output lengths as the server counted them (`usage`), the client's own count of each
//! prompt checked against the server's, the chat template's overhead, and the prefix-cache hit rate. A pure
//! function of the committed records.

use crate::record::plan::Endpoint;
use crate::record::{PointRecord, RequestRecord, Status};
use serde::{Deserialize, Serialize};

/// The client's and the server's prompt counts may differ by this share before a cell is flagged.
pub const MISMATCH_SHARE: f64 = 0.01;

/// min, p50, p95 and max of a set of token counts (nearest-rank percentiles: they are counts).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: i64,
    pub p50: i64,
    pub p95: i64,
    pub max: i64,
}

impl Spread {
    pub fn of(mut v: Vec<i64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Spread { min: v[0], p50: rank(0.5), p95: rank(0.95), max: v[v.len() - 1] })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRow {
    pub group: String,
    /// The cell's grid values (`concurrency=4 shared_prefix=256`).
    pub cell: String,
    pub endpoint: Endpoint,
    /// Measured requests that completed (their `usage` is what is counted).
    pub requests: usize,
    /// Prompt and output tokens per request, from the server's `usage`.
    pub prompt: Option<Spread>,
    pub output: Option<Spread>,
    /// The client's count of each prompt (ids sent, or text through the model's tokenizer; chat: the
    /// message alone).
    pub sent: Option<Spread>,
    /// Server minus client count per request: 0 for completions; the chat template's tokens for chat.
    pub overhead: Option<Spread>,
    /// Requests whose counts differ by more than 1% (completions), or whose template overhead differs from
    /// the cell's median by more than 1% of the prompt (chat).
    pub mismatched: usize,
    /// vLLM's prefix-cache hits over queries (tokens) over the cell's phases.
    pub prefix_hit_rate: Option<f64>,
    /// Requests whose counts were compared (`mismatched` is out of these); the templates word the flag.
    pub compared: usize,
}

fn cell_of(p: &PointRecord) -> String {
    let vars = crate::record::values::vars_text(&p.vars, " ");
    if vars.is_empty() { "(one cell)".to_owned() } else { vars }
}

/// One row per cell of every load point that ran, in plan order.
pub fn rows(points: &[PointRecord], requests: &[RequestRecord]) -> Vec<WorkloadRow> {
    let mut cells: Vec<(String, String, Vec<&PointRecord>)> = Vec::new();
    for p in points.iter().filter(|p| p.status == Status::Ok) {
        let cell = cell_of(p);
        match cells.iter_mut().find(|(g, c, _)| *g == p.group && *c == cell) {
            Some((_, _, ps)) => ps.push(p),
            None => cells.push((p.group.clone(), cell, vec![p])),
        }
    }
    cells.into_iter().map(|(group, cell, ps)| row(group, cell, &ps, requests)).collect()
}

fn row(group: String, cell: String, ps: &[&PointRecord], requests: &[RequestRecord]) -> WorkloadRow {
    let endpoint = ps[0].client.endpoint;
    let ok: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| r.ok() && !r.warmup && !r.tail && ps.iter().any(|p| p.point == r.point && p.attempt == r.attempt))
        .collect();
    let tokens = |f: fn(&RequestRecord) -> Option<u32>| ok.iter().filter_map(|r| f(r).map(i64::from)).collect();
    let pairs: Vec<(i64, i64)> =
        ok.iter().filter_map(|r| Some((i64::from(r.sent_tokens?), i64::from(r.prompt_tokens?)))).collect();
    let overhead = Spread::of(pairs.iter().map(|(sent, server)| server - sent).collect());
    let mismatched = match (endpoint, overhead) {
        (Endpoint::Chat, Some(o)) => {
            pairs.iter().filter(|(s, v)| ((v - s) - o.p50).abs() as f64 > MISMATCH_SHARE * *v as f64).count()
        }
        _ => pairs.iter().filter(|(s, v)| (v - s).abs() as f64 > MISMATCH_SHARE * (*s).max(1) as f64).count(),
    };
    let (mut hits, mut queries) = (0.0, 0.0);
    for p in ps {
        if let (Some(b), Some(a)) = (&p.before, &p.after) {
            let d = crate::probe::metrics::delta(b, a);
            hits += d.prefix_hits.unwrap_or(0.0);
            queries += d.prefix_queries.unwrap_or(0.0);
        }
    }
    let compared = pairs.len();
    WorkloadRow {
        group,
        cell,
        endpoint,
        requests: ok.len(),
        prompt: Spread::of(tokens(|r| r.prompt_tokens)),
        output: Spread::of(tokens(|r| r.completion_tokens)),
        sent: Spread::of(pairs.iter().map(|p| p.0).collect()),
        overhead,
        mismatched,
        prefix_hit_rate: (queries > 0.0).then(|| hits / queries),
        compared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::plan::ClientConfig;

    fn point(id: &str, endpoint: Endpoint) -> PointRecord {
        let mut vars = indexmap::IndexMap::new();
        vars.insert("concurrency".to_owned(), crate::record::values::Scalar::Int(2));
        PointRecord {
            point: id.into(),
            attempt: 0,
            group: "g".into(),
            repeat: 0,
            vars,
            client: ClientConfig { endpoint, ..Default::default() },
            model: "m".into(),
            started_at: String::new(),
            wall_s: 1.0,
            samples_offset_s: 0.0,
            warmup_requests: 0,
            before: None,
            after: None,
            gpu_sampled: false,
            status: Status::Ok,
            error: None,
            beside: None,
            switch_shared: None,
            trace_sent: None,
        }
    }

    fn req(point: &str, sent: u32, server: u32, out: u32) -> RequestRecord {
        RequestRecord {
            point: point.into(),
            sent_tokens: Some(sent),
            prompt_tokens: Some(server),
            completion_tokens: Some(out),
            ..Default::default()
        }
    }

    #[test]
    fn spreads_are_nearest_rank() {
        let s = Spread::of((1..=100).collect()).unwrap();
        assert_eq!((s.min, s.p50, s.p95, s.max), (1, 50, 95, 100));
        assert_eq!(Spread::of(vec![7]).unwrap().p95, 7);
        assert!(Spread::of(vec![]).is_none());
    }

    #[test]
    fn repeats_pool_into_one_cell_and_mismatches_are_flagged() {
        let points = [point("a", Endpoint::Completions), point("b", Endpoint::Completions)];
        let mut reqs = vec![req("a", 100, 100, 10), req("b", 200, 200, 30), req("b", 300, 304, 20)];
        reqs.push(RequestRecord { warmup: true, ..req("a", 1, 999, 1) });
        let rows = rows(&points, &reqs);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.requests, r.cell.as_str()), (3, "concurrency=2"));
        assert_eq!(r.prompt.unwrap(), Spread { min: 100, p50: 200, p95: 304, max: 304 });
        assert_eq!((r.output.unwrap().min, r.output.unwrap().max), (10, 30));
        assert_eq!(r.mismatched, 1, "304 against 300 is 1.3% off");
        assert_eq!((r.mismatched, r.compared), (1, 3));
    }

    #[test]
    fn a_chat_templates_constant_overhead_is_reported_not_flagged() {
        let points = [point("a", Endpoint::Chat)];
        let reqs: Vec<RequestRecord> = (0..20).map(|i| req("a", 100 + i, 100 + i + 7, 5)).collect();
        let r = &rows(&points, &reqs)[0];
        assert_eq!((r.overhead.unwrap().min, r.overhead.unwrap().max, r.mismatched), (7, 7, 0));
        let mut odd = reqs.clone();
        odd.push(req("a", 100, 120, 5));
        assert_eq!(rows(&points, &odd)[0].mismatched, 1);
    }
}
