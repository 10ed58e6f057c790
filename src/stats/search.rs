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
//!
//! Each probe's reason and the search's stop are typed findings ([`Why`], [`Stop`]) built only here;
//! [`SearchState::holds`] checks them against the ladder and the cells (`servelab report --check`). The words
//! are the templates' (`templates/rate_findings.md`).

use super::rate::{self, Judgement, RateCell};
use crate::record::plan::{Point, PrecisionTarget, ServerGroup};
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, Status};
use crate::spec::Slo;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Why a rung got its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// No repeat of the rung succeeded; `error` is the first error its records carry (their own text).
    /// `measured`: some point sent requests (a failed start records its points with none).
    PointsFailed { error: Option<String>, measured: bool },
    /// The rung's cell, judged as the sweep judges it.
    Judged { judgement: Judgement },
}

impl Why {
    /// The verdict the reason gives: a probe's verdict is never chosen apart from its reason.
    pub fn verdict(&self) -> Verdict {
        match self {
            Why::PointsFailed { measured: true, .. } => Verdict::Fails,
            Why::PointsFailed { measured: false, .. } => Verdict::Unmeasured,
            Why::Judged { judgement } => match judgement {
                Judgement::Sustains(_) | Judgement::Steady => Verdict::Sustains,
                Judgement::Rising { .. } | Judgement::Below(_) => Verdict::Fails,
                Judgement::RisingSome { .. } | Judgement::Straddles(_) => Verdict::Borderline,
                Judgement::Undelivered { .. } => Verdict::Undelivered,
            },
        }
    }
}

/// One judged rate, in the order the search probed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub rate: f64,
    pub verdict: Verdict,
    pub why: Why,
}

impl Probe {
    fn new(rate: f64, why: Why) -> Probe {
        Probe { rate, verdict: why.verdict(), why }
    }
}

/// Why the search ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    /// The plan holds no rate.
    NoRates,
    /// The lowest rate fails: the limit lies below the search.
    BelowSearch { rate: f64 },
    /// The lowest rate is borderline: the limit lies near or below the search.
    LowestBorderline { rate: f64 },
    /// The client did not deliver the lowest rate.
    LowestUndelivered { rate: f64 },
    /// Nothing was measured at the lowest rate.
    LowestUnmeasured { rate: f64 },
    /// The ladder holds one rate, and it sustains.
    OneRate { rate: f64 },
    /// The highest rate sustains: the limit lies above the search.
    AboveSearch { rate: f64 },
    /// Neighbours on the ladder: `sustains` does, `fails` does not.
    Bracketed { sustains: f64, fails: f64 },
    /// `at` is borderline after every repeat allowed; `sustains` is the highest rate that sustained.
    Borderline { sustains: f64, at: f64 },
    /// The client did not deliver `at`.
    Undelivered { sustains: f64, at: f64 },
    /// Nothing was measured at `at`.
    Unmeasured { sustains: f64, at: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    pub probes: Vec<Probe>,
    /// The point to measure next; None once the search is over.
    pub next: Option<String>,
    /// Why the search ended (None while it runs).
    pub stop: Option<Stop>,
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
    Judged(Why),
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
    let mut s = SearchState { probes: Vec::new(), next: None, stop: None, bracket: (None, None) };
    let Some(last) = ladder.len().checked_sub(1) else {
        s.stop = Some(Stop::NoRates);
        return s;
    };
    let judge = |i: usize, s: &mut SearchState| -> Option<Verdict> {
        match rung(group, ladder[i], points, requests, rules) {
            Rung::Measure(id) => {
                s.next = Some(id);
                None
            }
            Rung::Judged(why) => {
                let p = Probe::new(ladder[i], why);
                let v = p.verdict;
                s.probes.push(p);
                Some(v)
            }
        }
    };
    let Some(v) = judge(0, &mut s) else { return s };
    if v != Verdict::Sustains {
        s.bracket = (None, Some(ladder[0]));
        let rate = ladder[0];
        s.stop = Some(match v {
            Verdict::Borderline => Stop::LowestBorderline { rate },
            Verdict::Undelivered => Stop::LowestUndelivered { rate },
            Verdict::Unmeasured => Stop::LowestUnmeasured { rate },
            _ => Stop::BelowSearch { rate },
        });
        return s;
    }
    s.bracket.0 = Some(ladder[0]);
    if last == 0 {
        s.stop = Some(Stop::OneRate { rate: ladder[0] });
        return s;
    }
    let (mut lo, mut hi) = (0, last);
    let Some(v) = judge(last, &mut s) else { return s };
    match v {
        Verdict::Sustains => {
            s.bracket = (Some(ladder[last]), None);
            s.stop = Some(Stop::AboveSearch { rate: ladder[last] });
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
            s.stop = Some(Stop::Bracketed { sustains: ladder[lo], fails: ladder[hi] });
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
    s.bracket = (Some(lo), Some(at));
    s.stop = Some(match v {
        Verdict::Borderline => Stop::Borderline { sustains: lo, at },
        Verdict::Unmeasured => Stop::Unmeasured { sustains: lo, at },
        _ => Stop::Undelivered { sustains: lo, at },
    });
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
        let error = settled.iter().find_map(|r| r.error.clone());
        // A point with no request at all was never measured (a failed start records its points so): that says
        // nothing about the rate.
        let measured = settled.iter().any(|r| requests.iter().any(|q| q.point == r.point && q.attempt == r.attempt));
        return Rung::Judged(Why::PointsFailed { error, measured });
    };
    Rung::Judged(Why::Judged { judgement: rate::judge(&cell, target) })
}

/// What the search rule gives for a sequence of verdicts: the rates probed in order (with the rung being
/// measured last while the search runs), the stop (None while it runs) and the bracket. The rule written
/// plainly over indices, without records.
type Expected = (Vec<f64>, Option<Stop>, (Option<f64>, Option<f64>));

fn expected(ladder: &[f64], verdicts: &[Verdict]) -> Expected {
    let mut probed = Vec::new();
    let Some(last) = ladder.len().checked_sub(1) else { return (probed, Some(Stop::NoRates), (None, None)) };
    probed.push(ladder[0]);
    let Some(&v) = verdicts.first() else { return (probed, None, (None, None)) };
    let rate = ladder[0];
    let stop = match v {
        Verdict::Sustains => None,
        Verdict::Fails => Some(Stop::BelowSearch { rate }),
        Verdict::Borderline => Some(Stop::LowestBorderline { rate }),
        Verdict::Undelivered => Some(Stop::LowestUndelivered { rate }),
        Verdict::Unmeasured => Some(Stop::LowestUnmeasured { rate }),
    };
    if stop.is_some() {
        return (probed, stop, (None, Some(rate)));
    }
    if last == 0 {
        return (probed, Some(Stop::OneRate { rate }), (Some(rate), None));
    }
    let (mut lo, mut hi, mut at) = (0, last, last);
    let mut k = 1;
    loop {
        probed.push(ladder[at]);
        let Some(&v) = verdicts.get(k) else {
            let bracket = if at == last { (Some(ladder[0]), None) } else { (Some(ladder[lo]), Some(ladder[hi])) };
            return (probed, None, bracket);
        };
        k += 1;
        let (sustains, to) = (ladder[lo], ladder[at]);
        match v {
            Verdict::Sustains if at == last => {
                return (probed, Some(Stop::AboveSearch { rate: to }), (Some(to), None));
            }
            Verdict::Sustains => lo = at,
            Verdict::Fails => hi = at,
            Verdict::Borderline => {
                return (probed, Some(Stop::Borderline { sustains, at: to }), (Some(sustains), Some(to)));
            }
            Verdict::Undelivered => {
                return (probed, Some(Stop::Undelivered { sustains, at: to }), (Some(sustains), Some(to)));
            }
            Verdict::Unmeasured => {
                return (probed, Some(Stop::Unmeasured { sustains, at: to }), (Some(sustains), Some(to)));
            }
        }
        if hi - lo <= 1 {
            let (s, f) = (ladder[lo], ladder[hi]);
            return (probed, Some(Stop::Bracketed { sustains: s, fails: f }), (Some(s), Some(f)));
        }
        at = (lo + hi) / 2;
    }
}

impl SearchState {
    /// Checks the search as written against its ladder and the group's cells: each probe's verdict follows
    /// from its reason, each reason from the cell at its rate (judged again by plain comparisons), each rate
    /// is the one the rule probes next after the verdicts before it, and the stop and bracket are the rule's.
    pub fn holds(&self, ladder: &[f64], cells: &[RateCell], target: Option<f64>) -> Vec<String> {
        let mut bad = Vec::new();
        for p in &self.probes {
            let at = super::trimmed(p.rate, 3);
            if p.verdict != p.why.verdict() {
                bad.push(format!("{at} req/s: verdict {:?} where its reason gives {:?}", p.verdict, p.why.verdict()));
            }
            let cell = cells.iter().find(|c| c.rate == p.rate);
            match (&p.why, cell) {
                (Why::PointsFailed { .. }, None) => {}
                (Why::Judged { judgement }, Some(c)) => {
                    let plain = rate::plain_judgement(c, target);
                    if !rate::same_judgement(judgement, &plain) {
                        bad.push(format!("{at} req/s: {judgement:?}, but its cell gives {plain:?}"));
                    }
                }
                (Why::PointsFailed { .. }, Some(_)) => {
                    bad.push(format!("{at} req/s: its points failed, yet it has a cell"))
                }
                (Why::Judged { .. }, None) => bad.push(format!("{at} req/s: judged, yet no cell at that rate")),
            }
        }
        let verdicts: Vec<Verdict> = self.probes.iter().map(|p| p.verdict).collect();
        let (probed, stop, bracket) = expected(ladder, &verdicts);
        let rates: Vec<f64> = self.probes.iter().map(|p| p.rate).collect();
        let running = usize::from(stop.is_none() && !ladder.is_empty());
        if probed.len() != rates.len() + running || probed[..rates.len().min(probed.len())] != rates[..] {
            bad.push(format!("probed {rates:?}; the rule probes {probed:?}"));
        }
        if self.stop != stop || self.bracket != bracket {
            bad.push(format!(
                "stopped {:?} bracketing {:?}; the rule gives {stop:?} bracketing {bracket:?}",
                self.stop, self.bracket
            ));
        }
        if self.stop.is_some() && self.next.is_some() {
            bad.push("the search stopped, yet names a point to measure next".to_owned());
        }
        bad
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
            if s.next.is_none() {
                // Every search run here is held against its ladder and its cells, as `report --check` does.
                let cells = rate::analyze(&points, &requests, Some(&slo)).into_iter().next().map(|s| s.cells);
                let mut ladder = ladder.to_vec();
                ladder.sort_by(f64::total_cmp);
                ladder.dedup();
                let bad = s.holds(&ladder, &cells.unwrap_or_default(), Some(slo.attainment));
                assert!(bad.is_empty(), "{bad:?} in {s:?}");
                return s;
            }
            let Some(id) = s.next else { unreachable!() };
            let p = g.points.iter().find(|p| p.id == id).unwrap();
            let (r, reqs) = measured(p, met(p.client.as_ref().unwrap().rate().unwrap()));
            points.push(r);
            requests.extend(reqs);
        }
        panic!("the search did not end in 100 points");
    }

    fn stop_words(s: &SearchState) -> String {
        crate::report::markdown::environment(None)
            .render_str("{% import \"rate_findings.md\" as f %}{{ f.stop(s) }}", minijinja::context! { s => &s.stop })
            .unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Over generated ladders and servers (any pattern of sustaining, failing and borderline rates, not
        /// only monotone ones), every search ends within its probe budget and its probes, stop and bracket
        /// hold against the rule and the cells (`search` checks `holds`); an edited verdict is caught.
        #[test]
        fn every_search_finding_holds_against_its_cells(
            n in 1usize..12,
            outcomes in proptest::collection::vec(proptest::sample::select(vec![400usize, 394, 300, 0]), 12),
        ) {
            let ladder: Vec<f64> = (0..n).map(|i| 10.0 * (i + 1) as f64).collect();
            let s = search(&ladder, 1, None, |r| outcomes[(r / 10.0) as usize - 1]);
            proptest::prop_assert!(s.stop.is_some() && s.probes.len() <= crate::plan::search::max_probes(n).max(1));
            for p in &s.probes {
                let o = outcomes[(p.rate / 10.0) as usize - 1];
                let want = match o { 400 => Verdict::Sustains, 394 => Verdict::Borderline, _ => Verdict::Fails };
                proptest::prop_assert_eq!(p.verdict, want, "{:?}", p);
            }
            let mut edited = s.clone();
            if let Some(p) = edited.probes.last_mut() {
                p.verdict = if p.verdict == Verdict::Sustains { Verdict::Fails } else { Verdict::Sustains };
                proptest::prop_assert!(!edited.holds(&ladder, &[], Some(0.99)).is_empty());
            }
        }
    }

    #[test]
    fn it_brackets_the_limit_to_one_step_in_few_probes() {
        let ladder = crate::plan::search::ladder(10.0, 100.0, 0.1);
        let s = search(&ladder, 1, None, |r| if r <= 47.0 { 400 } else { 300 });
        let rates: Vec<f64> = s.probes.iter().map(|p| p.rate).collect();
        assert_eq!((rates[0], rates[1]), (10.0, 100.0), "the ends first: {rates:?}");
        assert!(rates.len() <= crate::plan::search::max_probes(ladder.len()), "{rates:?}");
        assert_eq!(s.bracket, (Some(45.9), Some(50.5)), "{:?}", s.stop); // 10·1.1^16 and 10·1.1^17, to 3 digits
        assert_eq!(s.stop, Some(Stop::Bracketed { sustains: 45.9, fails: 50.5 }));
        assert_eq!(stop_words(&s), "bracketed to one step of the ladder: 45.9 req/s sustains, 50.5 req/s does not");
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
        assert_eq!((all.probes.len(), all.bracket), (2, (Some(100.0), None)), "{:?}", all.stop);
        assert_eq!(stop_words(&all), "the highest rate, 100 req/s, sustains: the limit lies above the search");
        let none = search(&ladder, 1, None, |_| 0);
        assert_eq!((none.probes.len(), none.bracket), (1, (None, Some(10.0))), "{:?}", none.stop);
        assert_eq!(none.stop, Some(Stop::BelowSearch { rate: 10.0 }));
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
        assert!(matches!(border.stop, Some(Stop::Borderline { .. })), "{:?}", border.stop);
        assert!(stop_words(&border).contains("is borderline: its attainment interval holds the target"));
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
        assert_eq!(s.stop, Some(Stop::LowestUnmeasured { rate: 10.0 }));
        let why = crate::report::markdown::environment(None)
            .render_str(
                "{% import \"rate_findings.md\" as f %}{{ f.why(w) }}",
                minijinja::context! { w => &s.probes[0].why },
            )
            .unwrap();
        assert_eq!(why, "its points failed: server did not start: CUDA out of memory");
    }
}
