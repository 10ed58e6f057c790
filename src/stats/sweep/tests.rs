//! Property tests: synthetic sweeps of every shape (linear, convex, plateau, dip, noisy), and every finding
//! and rule of thumb checked against the numbers it describes.

use super::*;
use proptest::prelude::*;

fn repeat(concurrency: u32, round: u32, tok_s: f64, p95: f64) -> RepeatStats {
    let e2e = Summary { n: 100, mean: p95 * 0.8, p50: p95 * 0.8, p95, p99: p95, stddev: 0.0, min: 0.0, max: p95 };
    RepeatStats {
        point: format!("c{concurrency}r{round}"),
        attempt: 0,
        repeat: round,
        wall_s: 10.0,
        requests: 100,
        ok: 100,
        errors: BTreeMap::new(),
        completion_tokens: (tok_s * 10.0) as u64,
        qps: tok_s / 64.0,
        tok_s,
        e2e: Some(e2e),
        ttft: None,
        itl_p50_s: None,
        itl_per_token: true,
        tpot: None,
        mean_lag_s: 0.0,
        short_outputs: 0,
        server_generation_tokens: None,
        server_mean_e2e_s: None,
        server_mean_ttft_s: None,
        prefix_hits: None,
        prefix_queries: None,
        waiting_max: None,
        kv_usage_max: None,
        preemptions: None,
        gpu_util_pct: None,
        gpu_util_readings: 0,
        window_s: Some(9.5),
        phase_tok_s: tok_s,
        phase_qps: tok_s / 64.0,
        ttft_gap_s: None,
        e2e_gap_s: None,
        tail_requests: 0,
        beside: 0,
        steal_pct_max: None,
        switch_shared: false,
    }
}

fn client(concurrency: u32) -> crate::record::plan::ClientConfig {
    crate::record::plan::ClientConfig {
        concurrency,
        max_tokens: 64,
        prompt_tokens: 128,
        request_timeout_s: 300.0,
        max_error_rate: 0.1,
        ..crate::stats::fixtures::timed_client(10.0)
    }
}

/// A group from per-level (tok/s, p95) curves with multiplicative noise per round.
fn group(levels: &[u32], tok: &[f64], p95: &[f64], noise: &[Vec<f64>], rules: &KneeRules) -> GroupSweep {
    let cells = levels
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let client = client(c);
            let repeats = noise
                .iter()
                .enumerate()
                .map(|(r, n)| repeat(c, r as u32, tok[i] * n[i], p95[i] * (2.0 - n[i])))
                .collect();
            Cell::new("g", &client, format!("c={c}"), repeats)
        })
        .collect();
    let mut g = GroupSweep {
        group: "g".into(),
        cells,
        knee: Knee::not_a_curve(rules),
        policy: RepeatPolicy::Mean,
        noise_floor: None,
        host: HostSummary::default(),
    };
    finish_group(&mut g, RepeatPolicy::Mean, rules, false, &[]);
    g
}

#[test]
fn repeats_go_where_the_latency_decision_is_open() {
    let rules = KneeRules::default();
    // p95 0.24, 0.264, 0.216 s over three rounds: 95% interval about 0.18–0.30 s; tokens/s ±25%.
    let g = group(&[1], &[100.0], &[0.24], &[vec![1.0], vec![0.9], vec![1.1]], &rules);
    let cell = &g.cells[0];
    assert!(needs_repeat(cell, 0.05, None), "tokens/s is not within ±5%");
    assert!(!needs_repeat(cell, 0.5, None), "tokens/s is within ±50% and nothing else is asked");
    assert!(needs_repeat(cell, 0.5, Some(0.25)), "the p95 interval straddles a 250 ms budget");
    assert!(!needs_repeat(cell, 0.5, Some(0.5)), "clearly within a 500 ms budget");
    assert!(!needs_repeat(cell, 0.5, Some(0.1)), "clearly over a 100 ms budget: more repeats decide nothing");
}

fn shape(kind: u8, n: usize) -> (Vec<f64>, Vec<f64>) {
    let levels: Vec<f64> = (0..n).map(|i| 2f64.powi(i as i32)).collect();
    let tok: Vec<f64> = levels
        .iter()
        .enumerate()
        .map(|(i, c)| match kind {
            0 => 100.0 * c,                                      // linear
            1 => 100.0 * c.powf(1.3),                            // convex
            2 => 100.0 * c.min(8.0),                             // plateau
            3 => 100.0 * c * if i == n / 2 { 0.7 } else { 1.0 }, // dip
            _ => 100.0 * c.powf(0.8),                            // concave
        })
        .collect();
    let p95: Vec<f64> = levels.iter().map(|c| 0.1 * (1.0 + c / 16.0)).collect();
    (tok, p95)
}

fn paired(g: &GroupSweep, i: usize, f: fn(&RepeatStats) -> Option<f64>) -> (f64, Option<(f64, f64)>) {
    let r = paired_ratios(&g.cells[i - 1], &g.cells[i], f);
    (crate::stats::summary::mean(&r), ci95(&r))
}

/// The findings as the built-in templates word them.
fn words(g: &GroupSweep) -> String {
    const TEXT: &str = "{% import \"findings.md\" as f %}{% if s.knee.operating %}{{ f.operating(s.knee.operating) }}\n{% endif %}\
        {{ f.throughput(s.knee.throughput) }}\n{{ f.latency(s.knee.latency) }}\n{{ f.thumbs(s) }}";
    let s = serde_json::json!({ "knee": g.knee, "rules_of_thumb": rules_of_thumb(g) });
    crate::report::markdown::environment(None).render_str(TEXT, minijinja::context! { s }).unwrap()
}

fn check(g: &GroupSweep, rules: &KneeRules) -> Result<(), TestCaseError> {
    use crate::stats::knee::{Operating, Throughput};
    let cells = &g.cells;
    let wrong = g.knee.holds(cells, rules);
    prop_assert!(wrong.is_empty(), "{:?}", wrong);
    let min_ratio = 1.0 + rules.marginal_gain_min;
    let sides: Vec<Side> =
        (1..cells.len()).map(|i| paired(g, i, |r| Some(r.tok_s))).map(|(m, ci)| side(m, ci, min_ratio)).collect();
    let first_not_above = sides.iter().position(|s| *s != Side::Above);
    let text = words(g);
    match (&g.knee.throughput, first_not_above) {
        (Throughput::Knee(s), Some(i)) => {
            prop_assert_eq!(sides[i], Side::Below);
            prop_assert_eq!(s.after, cells[i].concurrency);
            prop_assert_eq!(g.knee.throughput_knee, Some(s.after));
            let (m, _) = paired(g, i + 1, |r| Some(r.tok_s));
            let expected = format!(
                "throughput stops scaling after concurrency {}: going to {} gains {:.0}% tokens/s",
                s.after,
                s.to,
                (m - 1.0) * 100.0
            );
            prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
        }
        (Throughput::Borderline(s), Some(i)) => {
            prop_assert_eq!(sides[i], Side::Straddles);
            prop_assert!(text.contains("borderline: throughput may stop scaling"));
            prop_assert!(g.knee.borderline.contains(&s.to));
        }
        (Throughput::NoKnee { .. }, None) => prop_assert!(text.contains("no throughput knee")),
        (t, f) => prop_assert!(false, "{:?} where the first step not above is {:?}", t, f),
    }
    if let Some(budget) = rules.p95_budget.map(|b| b.0.as_secs_f64()) {
        let within: Vec<bool> = cells.iter().map(|c| c.p95_upper().is_some_and(|u| u <= budget)).collect();
        let expected = within.iter().position(|w| !w).map_or(cells.len(), |i| i);
        let op = g.knee.operating_point;
        prop_assert_eq!(op, expected.checked_sub(1).map(|i| cells[i].concurrency));
        if let Some(Operating::Point { at, .. }) = &g.knee.operating {
            let expected = format!("concurrency {} ", at.concurrency);
            prop_assert!(text.contains(&expected));
        }
    }
    // "From concurrency a to b, tokens/s grows s× (x → y): a cumulative efficiency S(c)/c of e."
    let (first, last) = (&cells[0], &cells[cells.len() - 1]);
    let s = last.head().tok_s / first.head().tok_s;
    let grows = format!("From concurrency {} to {}, tokens/s grows {s:.1}×", first.concurrency, last.concurrency);
    prop_assert!(text.contains(&grows), "{} lacks {}", text, grows);
    let e = s / f64::from(last.concurrency);
    let eff = format!("S(c)/c of {e:.2}.");
    prop_assert!(text.contains(&eff), "{} lacks {}", text, eff);
    for i in 1..cells.len() {
        let (m, _) = paired(g, i, |r| Some(r.tok_s));
        let step = m / (f64::from(cells[i].concurrency) / f64::from(cells[i - 1].concurrency));
        let expected = format!("{}→{}: {step:.2}", cells[i - 1].concurrency, cells[i].concurrency);
        prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_sentence_matches_the_numbers_it_describes(
        kind in 0u8..5,
        n in 3usize..8,
        rounds in 1usize..6,
        noise in proptest::collection::vec(proptest::collection::vec(0.85f64..1.15, 8), 6),
        budget_ms in 100u64..400,
    ) {
        let levels: Vec<u32> = (0..n).map(|i| 1 << i).collect();
        let (tok, p95) = shape(kind, n);
        let rules = KneeRules {
            p95_budget: Some(crate::spec::Dur(std::time::Duration::from_millis(budget_ms))),
            ..KneeRules::default()
        };
        let g = group(&levels, &tok, &p95, &noise[..rounds], &rules);
        check(&g, &rules)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Queueing decides from every repeat: all of a level's repeats waited → blow-up; some → borderline;
    /// and whatever the finding, its predicate holds against the cells.
    #[test]
    fn queueing_is_read_from_every_repeat(
        waited in proptest::collection::vec(proptest::collection::vec(proptest::option::of(0u32..40), 3), 5),
        rounds in 1usize..4,
    ) {
        use crate::stats::knee::Latency;
        let rules = KneeRules::default();
        let levels = [1, 2, 4, 8, 16];
        let flat = vec![vec![1.0; 8]; rounds];
        let mut g = group(&levels, &[100.0, 200.0, 400.0, 800.0, 1600.0], &[0.1; 5], &flat, &rules);
        for (c, w) in g.cells.iter_mut().zip(&waited) {
            for (r, x) in c.repeats.iter_mut().zip(w) {
                r.waiting_max = x.map(f64::from);
            }
        }
        g.knee = super::knee(&g.cells, &rules);
        prop_assert!(g.knee.holds(&g.cells, &rules).is_empty(), "{:?}", g.knee.holds(&g.cells, &rules));
        let counts: Vec<usize> = g.cells.iter()
            .map(|c| c.repeats.iter().filter(|r| r.waiting_max.is_some_and(|w| w > 0.0)).count())
            .collect();
        match counts.iter().position(|n| *n > 0) {
            None => {
                let none = matches!(g.knee.latency, Latency::NoBlowUp { .. });
                prop_assert!(none, "{:?}", g.knee.latency);
            }
            Some(i) if counts[i] == rounds => {
                let queued = matches!(&g.knee.latency, Latency::Queued(q) if q.at == levels[i]);
                prop_assert!(queued, "{:?}", g.knee.latency);
                prop_assert_eq!(g.knee.latency_knee, Some(levels[i]));
            }
            Some(i) => {
                let some = matches!(&g.knee.latency, Latency::BorderlineQueued(q) if q.at == levels[i]);
                prop_assert!(some, "{:?}", g.knee.latency);
                prop_assert_eq!(g.knee.latency_knee, None);
                prop_assert!(g.knee.borderline.contains(&levels[i]));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Over generated repeats (errors, short outputs, client lag, slots, short phases, client-server gaps,
    /// warm prefix caches, per-chunk ITL), every cell note holds against its cell's figures, every
    /// condition that calls for a note has it, and the CSV words the notes as the reports do.
    #[test]
    fn every_cell_note_holds_against_its_figures(
        per in proptest::collection::vec(
            (0usize..3, 0usize..4, 0f64..0.2, 0usize..3, proptest::option::of(0f64..12.0), proptest::bool::ANY,
             proptest::bool::weighted(0.2), proptest::option::of(-0.05f64..0.2), 0f64..1.0,
             proptest::option::of(0f64..50.0), proptest::bool::weighted(0.8)),
            12),
        rounds in 1usize..4,
        gpu in proptest::bool::ANY,
        shared in proptest::bool::ANY,
    ) {
        let rules = KneeRules::default();
        let levels = [1, 2, 4, 8];
        let (tok, p95) = shape(2, 4);
        let flat = vec![vec![1.0; 8]; rounds];
        let mut g = group(&levels, &tok, &p95, &flat, &rules);
        for (i, r) in g.cells.iter_mut().flat_map(|c| c.repeats.iter_mut()).enumerate() {
            let (errors, short, lag, beside, steal, switch, whole, gap, first, hits, per_token) = per[i % 12];
            if errors > 0 {
                r.errors.insert(if i % 2 == 0 { "timeout".into() } else { "http_500".into() }, errors);
            }
            r.short_outputs = short;
            r.mean_lag_s = lag;
            r.beside = beside;
            r.steal_pct_max = steal.filter(|_| beside > 0);
            r.switch_shared = switch && beside > 0;
            r.window_s = (!whole).then_some(9.5);
            r.e2e_gap_s = gap;
            r.server_mean_e2e_s = gap.map(|_| 0.3);
            r.ttft_gap_s = gap.map(|g| g * first);
            r.prefix_hits = hits;
            r.itl_p50_s = Some(0.01);
            r.itl_per_token = per_token;
            r.gpu_util_pct = gpu.then_some(50.0).filter(|_| i % 3 != 0);
        }
        for c in &mut g.cells {
            c.shared_by_design = shared;
        }
        finish_group(&mut g, RepeatPolicy::Mean, &rules, gpu, &[]);
        let words = crate::report::sweep_csv::notes_text(&g.cells).unwrap();
        for (c, text) in g.cells.iter().zip(&words) {
            let wrong = notes_hold(c, &g.knee, None);
            prop_assert!(wrong.is_empty(), "{:?}", wrong);
            let h = c.head();
            let errors: usize = h.errors.values().sum();
            prop_assert_eq!(errors > 0, text.contains(&format!("errors: {errors} (")), "{}", text);
            let whole = c.repeats.iter().filter(|r| r.window_s.is_none()).count();
            let short = format!("{whole} of {} repeats too short", c.repeats.len());
            prop_assert_eq!(whole > 0, text.contains(&short), "{}", text);
            prop_assert_eq!(!gpu, text.contains("no GPU: gpu_util_pct not measured"), "{}", text);
            // Sessions, traces and datasets share prompt prefixes by design: their hits are no warm cache.
            let warm = !shared && h.prefix_hits.is_some_and(|x| x > 0.0);
            prop_assert_eq!(warm, text.contains("warm prefix cache"), "{}", text);
            if shared && h.prefix_hits.is_some_and(|x| x > 0.0) {
                let mut said = c.clone();
                said.notes.push(CellNote::WarmPrefix { hits: h.prefix_hits.unwrap() });
                prop_assert!(!notes_hold(&said, &g.knee, None).is_empty(), "a warm-cache note on shared prompts");
            }
            if let CellNote::Gap { gap_ms, .. } = c.notes.iter().find(|n| matches!(n, CellNote::Gap { .. })).unwrap_or(&CellNote::NoGpu) {
                let said = if *gap_ms < 0.0 { "below vLLM's" } else { "exceeds vLLM's" };
                prop_assert!(text.contains(said), "{}", text);
            }
        }
        // A note the figures do not call for does not hold.
        let mut c = g.cells[0].clone();
        c.notes.push(CellNote::ShortOutputs { n: c.head().short_outputs + 1 });
        prop_assert!(!notes_hold(&c, &g.knee, None).is_empty());
    }
}

#[test]
fn a_tampered_finding_does_not_hold() {
    use crate::stats::knee::{Latency, Throughput};
    let rules = KneeRules::default();
    let quiet = vec![vec![1.0; 8], vec![1.01; 8], vec![0.99; 8]];
    let (tok, p95) = shape(2, 6);
    let mut g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &quiet, &rules);
    assert!(g.knee.holds(&g.cells, &rules).is_empty());
    let honest = g.knee.clone();
    if let Throughput::Knee(s) = &mut g.knee.throughput {
        s.after = 4;
    }
    assert!(!g.knee.holds(&g.cells, &rules).is_empty(), "a knee moved to another level");
    g.knee = honest.clone();
    g.knee.latency = Latency::NoBlowUp { from: 1, to: 32, max: 2.0 };
    g.cells[3].repeats[0].waiting_max = Some(5.0);
    assert!(!g.knee.holds(&g.cells, &rules).is_empty(), "queueing at 8 left unsaid");
}

#[test]
fn a_clear_plateau_is_a_knee_and_a_straddling_step_is_borderline() {
    let rules = KneeRules::default();
    let quiet = vec![vec![1.0; 8], vec![1.01; 8], vec![0.99; 8]];
    let (tok, p95) = shape(2, 6);
    let g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &quiet, &rules);
    assert_eq!(g.knee.throughput_knee, Some(8));
    // One noisy round at 16 makes the 8→16 step's interval straddle the 10% minimum.
    let noisy = vec![vec![1.0; 8], vec![1.0, 1.0, 1.0, 1.0, 1.4, 1.0, 1.0, 1.0], vec![1.0; 8]];
    let g = group(&[1, 2, 4, 8, 16, 32], &tok, &p95, &noisy, &rules);
    assert_eq!(g.knee.throughput_knee, None);
    assert!(matches!(g.knee.throughput, crate::stats::knee::Throughput::Borderline(_)), "{:?}", g.knee.throughput);
    check(&g, &rules).unwrap();
}

/// A closed loop of 4 slots whose non-streamed requests all take 1 s completes in waves (each slot 1 ms after
/// the one before, its next request 0.1 ms after its last ended), 12 rounds: 4 requests of 64 tokens a second.
fn waves(stream: bool) -> (PointRecord, Vec<RequestRecord>) {
    let mut c = client(4);
    c.stream = stream;
    let mut reqs = Vec::new();
    for slot in 0..4u32 {
        let mut start = 0.0;
        for j in 1..=12u32 {
            let end = f64::from(j) + 0.001 * f64::from(slot);
            let first_token_s = stream.then_some(start + 0.5);
            let (chunk_us, chunks) = if stream { (vec![500_000 - 1], 2) } else { (vec![], 1) };
            reqs.push(RequestRecord {
                point: "p".into(),
                start_s: start,
                scheduled_s: start,
                first_token_s,
                end_s: end,
                chunk_us,
                chunks,
                completion_tokens: Some(64),
                http_status: Some(200),
                ..Default::default()
            });
            start = end + 0.0001;
        }
    }
    (PointRecord::measured("p", "g", c, 13.0), reqs)
}

#[test]
fn a_non_streamed_closed_loop_reads_its_wave_rate_from_metrics_version_3() {
    let (p, reqs) = waves(false);
    let all: Vec<&RequestRecord> = reqs.iter().collect();
    let v3 = super::repeats::repeat_stats(&p, &all, &[], 3);
    assert!((v3.tok_s - 256.0).abs() < 0.5, "{}", v3.tok_s);
    // As recorded before version 3 (and so re-rendered): one wave more than the window spans.
    let v2 = super::repeats::repeat_stats(&p, &all, &[], 2);
    assert!(v2.tok_s > 1.05 * 256.0, "{}", v2.tok_s);
    assert!(v3.window_s.unwrap() < v2.window_s.unwrap());
    // A streamed loop's window is the same under either version.
    let (p, reqs) = waves(true);
    let all: Vec<&RequestRecord> = reqs.iter().collect();
    let (s2, s3) = (super::repeats::repeat_stats(&p, &all, &[], 2), super::repeats::repeat_stats(&p, &all, &[], 3));
    assert_eq!((s2.tok_s, s2.window_s), (s3.tok_s, s3.window_s));
}
