use super::*;
use crate::record::plan::{Arrival, ClientConfig, OpenLoop};
use crate::spec::Dur;
use crate::stats::fixtures;

fn client(rate: f64) -> ClientConfig {
    ClientConfig {
        max_tokens: 1,
        prompt_tokens: 8,
        request_timeout_s: 60.0,
        max_error_rate: 1.0,
        open_loop: Some(OpenLoop { rate, arrival: Arrival::Constant, burstiness: None, min_requests: 400 }),
        ..fixtures::timed_client(1.0)
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
    let record = PointRecord { repeat: p.repeat, model: "m".into(), ..PointRecord::measured(&p.id, "g", c, 1.0) };
    // The requests that miss the SLO are spread evenly over the phase.
    let missed: std::collections::BTreeSet<usize> = (0..400 - met).map(|j| j * 400 / (400 - met)).collect();
    let reqs = (0..400u32)
        .map(|i| {
            let t = f64::from(i) / 400.0;
            let e2e = if missed.contains(&(i as usize)) { 0.5 } else { 0.01 };
            fixtures::ok_request(&p.id, i, t, t, 0.005, e2e)
        })
        .collect();
    (record, reqs)
}

fn slo() -> Slo {
    Slo { ttft: None, tpot: None, e2e: Some(Dur::millis(100)), attainment: 0.99 }
}

/// Runs a search to its end against a server whose attainment at each rate is `met(rate)` of 400.
fn search(ladder: &[f64], repeats: u32, precision: Option<PrecisionTarget>, met: impl Fn(f64) -> usize) -> SearchState {
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
