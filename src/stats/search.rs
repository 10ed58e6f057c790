//! The maximum-sustainable-rate search, as a pure function of what was recorded: given a group's planned
//! ladder of rates and the points measured so far, it says which point to measure next, or why the search is
//! over. The executor asks it after every point; a resumed run and a re-rendered report replay it exactly.
//!
//! The rule: probe the lowest rate, then the highest, then bisect the bracket between the highest rate that
//! sustains and the lowest that does not, until they are neighbours on the ladder (the tolerance). It stops
//! early when a rate cannot be judged: its attainment interval still straddles the target after the repeats
//! the precision rule allows (neighbouring rates cannot be told apart), or the client did not deliver it.
//! A rate is measured with all its planned repeats (or, with `precision:`, until its cell is precise)
//! before it is judged.

use super::rate::{self, RateCell};
use crate::record::plan::{Point, PrecisionTarget, ServerGroup};
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, Status};
use crate::spec::Slo;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Sustains,
    Fails,
    /// The attainment interval straddles the target: not decided at this precision.
    Borderline,
    /// The client fell behind its schedule: the rate says nothing about the server.
    Undelivered,
    /// None of its points measured anything (the server did not start, or died before them): the search stops
    /// without a verdict on the server.
    Unmeasured,
}

/// One judged rate, in the order the search probed it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probe {
    pub rate: f64,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchState {
    pub probes: Vec<Probe>,
    /// The point to measure next; None once the search is over.
    pub next: Option<String>,
    /// Why the search ended (empty while it runs).
    pub stop: String,
    /// The highest rate that sustained and the lowest that did not (or could not be judged).
    pub bracket: (Option<f64>, Option<f64>),
}

/// What a search needs besides the records.
pub struct Rules<'a> {
    pub slo: Option<&'a Slo>,
    pub precision: Option<PrecisionTarget>,
}

enum Rung {
    Measure(String),
    Judged(Verdict, String),
}

/// Replays the search of `group` over the records so far.
/// The search of one server group replayed over a run's records: the one entry point of the executor (which
/// point next) and the report (the probes so far), so both read the same records the same way.
pub fn replay_recorded(group: &ServerGroup, rec: &crate::record::Recorded, rules: &Rules) -> SearchState {
    let points: Vec<PointRecord> = rec.points.iter().filter(|p| p.group == group.id).cloned().collect();
    replay(group, &points, &rec.requests, rules)
}

pub fn replay(group: &ServerGroup, points: &[PointRecord], requests: &[RequestRecord], rules: &Rules) -> SearchState {
    let mut ladder: Vec<f64> = group.points.iter().filter_map(|p| p.client.as_ref()?.rate()).collect();
    ladder.sort_by(f64::total_cmp);
    ladder.dedup();
    let mut s = SearchState { probes: Vec::new(), next: None, stop: String::new(), bracket: (None, None) };
    let Some(last) = ladder.len().checked_sub(1) else {
        s.stop = "the plan holds no rate to search".into();
        return s;
    };
    let judge = |i: usize, s: &mut SearchState| -> Option<Verdict> {
        match rung(group, ladder[i], points, requests, rules) {
            Rung::Measure(id) => {
                s.next = Some(id);
                None
            }
            Rung::Judged(verdict, why) => {
                s.probes.push(Probe { rate: ladder[i], verdict, why });
                Some(verdict)
            }
        }
    };
    let r = |x: f64| super::trimmed(x, 3);
    let Some(v) = judge(0, &mut s) else { return s };
    if v != Verdict::Sustains {
        s.bracket = (None, Some(ladder[0]));
        s.stop = match v {
            Verdict::Borderline => format!(
                "the lowest rate, {} req/s, is borderline: the limit lies near or below the search",
                r(ladder[0])
            ),
            Verdict::Undelivered => format!("the client did not deliver the lowest rate, {} req/s", r(ladder[0])),
            Verdict::Unmeasured => format!("nothing was measured at the lowest rate, {} req/s", r(ladder[0])),
            _ => format!("the lowest rate, {} req/s, does not sustain: the limit lies below the search", r(ladder[0])),
        };
        return s;
    }
    s.bracket.0 = Some(ladder[0]);
    if last == 0 {
        s.stop = "the ladder holds one rate".into();
        return s;
    }
    let (mut lo, mut hi) = (0, last);
    let Some(v) = judge(last, &mut s) else { return s };
    match v {
        Verdict::Sustains => {
            s.bracket = (Some(ladder[last]), None);
            s.stop = format!("the highest rate, {} req/s, sustains: the limit lies above the search", r(ladder[last]));
            return s;
        }
        Verdict::Fails => {}
        Verdict::Borderline | Verdict::Undelivered | Verdict::Unmeasured => {
            return undecided(s, ladder[lo], ladder[last], v);
        }
    }
    loop {
        s.bracket = (Some(ladder[lo]), Some(ladder[hi]));
        if hi - lo <= 1 {
            s.stop = format!(
                "bracketed to one step of the ladder: {} req/s sustains, {} req/s does not",
                r(ladder[lo]),
                r(ladder[hi])
            );
            return s;
        }
        let mid = (lo + hi) / 2;
        let Some(v) = judge(mid, &mut s) else { return s };
        match v {
            Verdict::Sustains => lo = mid,
            Verdict::Fails => hi = mid,
            Verdict::Borderline | Verdict::Undelivered | Verdict::Unmeasured => {
                return undecided(s, ladder[lo], ladder[mid], v);
            }
        }
    }
}

fn undecided(mut s: SearchState, lo: f64, at: f64, v: Verdict) -> SearchState {
    let r = |x: f64| super::trimmed(x, 3);
    s.bracket = (Some(lo), Some(at));
    s.stop = match v {
        Verdict::Borderline => format!(
            "{} req/s is borderline: its attainment interval holds the target after every repeat allowed, so \
             rates this close cannot be told apart; the limit lies between {} and {} req/s",
            r(at),
            r(lo),
            r(at)
        ),
        Verdict::Unmeasured => {
            format!("nothing was measured at {} req/s, so the search stops there; {} req/s sustains", r(at), r(lo))
        }
        _ => format!(
            "the client did not deliver {} req/s, so the search cannot judge rates from there; {} req/s sustains",
            r(at),
            r(lo)
        ),
    };
    s
}

/// A rung's state: the point it needs measured next, or its verdict once its repeats are in.
fn rung(group: &ServerGroup, rate: f64, points: &[PointRecord], requests: &[RequestRecord], rules: &Rules) -> Rung {
    let mut planned: Vec<&Point> =
        group.points.iter().filter(|p| p.client.as_ref().and_then(|c| c.rate()) == Some(rate)).collect();
    planned.sort_by_key(|p| p.repeat);
    // The latest attempt of each planned point; an interrupted one is measured again.
    let latest = |id: &str| points.iter().filter(|r| r.point == id).max_by_key(|r| r.attempt);
    let settled: Vec<&PointRecord> =
        planned.iter().filter_map(|p| latest(&p.id)).filter(|r| r.status != Status::Interrupted).collect();
    let next = planned.iter().find(|p| latest(&p.id).is_none_or(|r| r.status == Status::Interrupted));
    let ok: Vec<PointRecord> = settled.iter().filter(|r| r.status == Status::Ok).map(|r| (*r).clone()).collect();
    let target = rules.slo.map(|s| s.attainment);
    let cell: Option<RateCell> =
        rate::analyze(&ok, requests, rules.slo).into_iter().next().and_then(|s| s.cells.into_iter().next());
    let more = match rules.precision {
        None => true,
        Some(p) => {
            settled.len() < p.min_repeats as usize
                || cell.as_ref().is_none_or(|c| rate::needs_repeat(c, p.rel_ci, target))
        }
    };
    if let Some(p) = next
        && more
    {
        return Rung::Measure(p.id.clone());
    }
    let Some(cell) = cell else {
        let why = settled.iter().find_map(|r| r.error.clone()).unwrap_or_else(|| "no repeat succeeded".into());
        // A point with no request at all was never measured (a failed start records its points so): that says
        // nothing about the rate.
        let measured = settled.iter().any(|r| requests.iter().any(|q| q.point == r.point && q.attempt == r.attempt));
        let verdict = if measured { Verdict::Fails } else { Verdict::Unmeasured };
        return Rung::Judged(verdict, format!("its points failed: {why}"));
    };
    if !cell.delivered && !cell.rising {
        let why = format!("{:.1}% of its requests left over 1 ms late", 100.0 * cell.late_share);
        return Rung::Judged(Verdict::Undelivered, why);
    }
    match rate::verdict(&cell, target) {
        None => Rung::Judged(Verdict::Sustains, sustains_why(&cell, target)),
        Some((why, true)) => Rung::Judged(Verdict::Borderline, why),
        Some((why, false)) => Rung::Judged(Verdict::Fails, why),
    }
}

fn sustains_why(c: &RateCell, target: Option<f64>) -> String {
    match target {
        Some(t) => format!(
            "attainment {:.1}% (95% CI {:.1}–{:.1}%) against {:.1}%",
            100.0 * c.attainment,
            100.0 * c.attainment_ci.0,
            100.0 * c.attainment_ci.1,
            100.0 * t
        ),
        None => "requests in flight stayed steady".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::plan::{Arrival, ClientConfig, OpenLoop};
    use crate::spec::Dur;

    fn client(rate: f64) -> ClientConfig {
        ClientConfig {
            concurrency: 0,
            requests: 0,
            requests_asked: 0,
            exact_requests: false,
            max_tokens: 1,
            prompt_tokens: 8,
            ignore_eos: true,
            stream: true,
            warmup: 0,
            seed: 0,
            shared_prefix_tokens: 0,
            prompts_file: None,
            vocab_size: None,
            request_timeout_s: 60.0,
            max_error_rate: 1.0,
            duration_s: Some(1.0),
            open_loop: Some(OpenLoop { rate, arrival: Arrival::Constant, burstiness: None, min_requests: 400 }),
            endpoint: Default::default(),
            ..Default::default()
        }
    }

    fn group(ladder: &[f64], repeats: u32) -> ServerGroup {
        let points = ladder
            .iter()
            .flat_map(|&r| {
                (0..repeats).map(move |k| Point {
                    id: format!("r{r}-{k}"),
                    vars: Default::default(),
                    repeat: k,
                    client: Some(client(r)),
                })
            })
            .collect();
        let server: crate::record::plan::ServerConfig = serde_json::from_value(serde_json::json!({
            "kind": "external", "argv": [], "env": {}, "base_url": "", "ready_url": "", "host": "", "port": 0,
            "model": null, "served_model_name": null, "max_model_len": null, "ready_timeout_s": 1.0, "stop_timeout_s": 1.0
        }))
        .unwrap();
        ServerGroup { id: "g".into(), vars: Default::default(), server, points }
    }

    /// A point measured at its rate: 400 requests on schedule, of which `met` finish within the SLO (100 ms).
    fn measured(p: &Point, met: usize) -> (PointRecord, Vec<RequestRecord>) {
        let c = p.client.clone().unwrap();
        let record: PointRecord = serde_json::from_value(serde_json::json!({
            "point": p.id, "group": "g", "repeat": p.repeat, "vars": {}, "client": c, "model": "m",
            "started_at": "", "wall_s": 1.0, "warmup_requests": 0, "before": null, "after": null,
            "gpu_sampled": false, "status": "ok", "error": null
        }))
        .unwrap();
        // The requests that miss the SLO are spread evenly over the phase.
        let missed: std::collections::BTreeSet<usize> = (0..400 - met).map(|j| j * 400 / (400 - met)).collect();
        let reqs = (0..400u32)
            .map(|i| {
                let t = f64::from(i) / 400.0;
                let e2e = if missed.contains(&(i as usize)) { 0.5 } else { 0.01 };
                RequestRecord {
                    point: p.id.clone(),
                    attempt: 0,
                    index: i,
                    warmup: false,
                    scheduled_s: t,
                    start_s: t,
                    first_token_s: Some(t + 0.005),
                    end_s: t + e2e,
                    chunk_us: vec![],
                    chunk_tokens: vec![],
                    chunks: 1,
                    tail: false,
                    prompt_tokens: Some(8),
                    completion_tokens: Some(1),
                    http_status: Some(200),
                    error: None,
                    ..Default::default()
                }
            })
            .collect();
        (record, reqs)
    }

    fn slo() -> Slo {
        Slo { ttft: None, tpot: None, e2e: Some(Dur::millis(100)), attainment: 0.99 }
    }

    /// Runs a search to its end against a server whose attainment at each rate is `met(rate)` of 400.
    fn search(
        ladder: &[f64],
        repeats: u32,
        precision: Option<PrecisionTarget>,
        met: impl Fn(f64) -> usize,
    ) -> SearchState {
        let g = group(ladder, repeats);
        let (mut points, mut requests) = (Vec::new(), Vec::new());
        let slo = slo();
        let rules = Rules { slo: Some(&slo), precision };
        for _ in 0..100 {
            let s = replay(&g, &points, &requests, &rules);
            let Some(id) = s.next else { return s };
            let p = g.points.iter().find(|p| p.id == id).unwrap();
            let (r, reqs) = measured(p, met(p.client.as_ref().unwrap().rate().unwrap()));
            points.push(r);
            requests.extend(reqs);
        }
        panic!("the search did not end in 100 points");
    }

    #[test]
    fn it_brackets_the_limit_to_one_step_in_few_probes() {
        let ladder = crate::plan::search::ladder(10.0, 100.0, 0.1);
        let s = search(&ladder, 1, None, |r| if r <= 47.0 { 400 } else { 300 });
        let rates: Vec<f64> = s.probes.iter().map(|p| p.rate).collect();
        assert_eq!((rates[0], rates[1]), (10.0, 100.0), "the ends first: {rates:?}");
        assert!(rates.len() <= crate::plan::search::max_probes(ladder.len()), "{rates:?}");
        assert_eq!(s.bracket, (Some(45.9), Some(50.5)), "{}", s.stop); // 10·1.1^16 and 10·1.1^17, to 3 digits
        assert!(s.stop.starts_with("bracketed to one step"), "{}", s.stop);
        // Every probe after the ends lies strictly inside the bracket known when it was chosen.
        let (mut lo, mut hi) = (10.0, 100.0);
        for p in &s.probes[2..] {
            assert!(lo < p.rate && p.rate < hi, "{} outside ({lo}, {hi})", p.rate);
            if p.verdict == Verdict::Sustains { lo = p.rate } else { hi = p.rate }
        }
    }

    #[test]
    fn it_stops_at_the_ends_and_at_a_borderline_rate() {
        let ladder = crate::plan::search::ladder(10.0, 100.0, 0.1);
        let all = search(&ladder, 1, None, |_| 400);
        assert_eq!((all.probes.len(), all.bracket), (2, (Some(100.0), None)), "{}", all.stop);
        let none = search(&ladder, 1, None, |_| 0);
        assert_eq!((none.probes.len(), none.bracket), (1, (None, Some(10.0))), "{}", none.stop);
        // 394 of 400 (98.5%): its interval (96.8–99.5%) holds 99%, so the rate cannot be told from its
        // neighbours; the search says so rather than guess.
        let border = search(&ladder, 1, None, |r| {
            if r < 30.0 {
                400
            } else if r < 60.0 {
                394
            } else {
                200
            }
        });
        let last = border.probes.last().unwrap();
        assert_eq!(last.verdict, Verdict::Borderline, "{:?}", border.probes);
        assert!(border.stop.contains("borderline"), "{}", border.stop);
    }

    #[test]
    fn a_borderline_rate_gets_the_repeats_precision_allows_before_it_is_judged() {
        let ladder = [10.0, 20.0, 40.0];
        let p = PrecisionTarget { rel_ci: 0.05, min_repeats: 2, max_repeats: 4 };
        let s = search(&ladder, 4, Some(p), |r| {
            if r < 15.0 {
                400
            } else if r < 30.0 {
                394
            } else {
                100
            }
        });
        // 10: two repeats (precise, clear); 40: two (clearly failing); 20: all four, then borderline.
        assert_eq!(
            s.probes.iter().map(|p| p.verdict).collect::<Vec<_>>(),
            [Verdict::Sustains, Verdict::Fails, Verdict::Borderline]
        );
    }

    /// A failed start records the first rung's points as failed with no request: the search says nothing was
    /// measured, not that the lowest rate does not sustain.
    #[test]
    fn a_failed_start_is_not_a_failing_rate() {
        let ladder = [10.0, 20.0];
        let g = group(&ladder, 1);
        let failed: Vec<PointRecord> = g
            .points
            .iter()
            .map(|p| {
                let (mut r, _) = measured(p, 400);
                r.status = Status::Failed;
                r.error = Some("server did not start: CUDA out of memory".into());
                r
            })
            .collect();
        let s = replay(&g, &failed, &[], &Rules { slo: None, precision: None });
        assert_eq!(s.probes[0].verdict, Verdict::Unmeasured, "{:?}", s.probes);
        assert!(s.stop.starts_with("nothing was measured at the lowest rate"), "{}", s.stop);
        assert!(s.probes[0].why.contains("CUDA out of memory"));
    }
}
