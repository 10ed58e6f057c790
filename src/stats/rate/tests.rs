use super::*;

fn cell(rate: f64, met: usize, n: usize) -> RateCell {
    cell_of(rate, "poisson".into(), vec![repeat(met, n, false)], &[])
}

#[test]
fn clopper_pearson_matches_known_values() {
    // Checked by the defining identity: P(X ≥ 396 | n = 400, p = lo) = P(X ≤ 396 | p = hi) = 0.025
    // (exact binomial sums); for 400/400 the lower bound is 0.025^(1/400).
    let (lo, hi) = clopper_pearson(396, 400);
    assert!((lo - 0.974_595_2).abs() < 1e-6 && (hi - 0.997_268_8).abs() < 1e-6, "{lo} {hi}");
    let (lo, hi) = clopper_pearson(400, 400);
    assert!((lo - 0.025f64.powf(1.0 / 400.0)).abs() < 1e-9 && hi == 1.0, "{lo}");
    assert_eq!(clopper_pearson(0, 10).0, 0.0);
}

/// A finding in the built-in templates' words.
fn words(macro_call: &str, s: &RateSweep) -> String {
    let text = format!("{{% import \"rate_findings.md\" as f %}}{{{{ f.{macro_call} }}}}");
    crate::report::markdown::environment(None).render_str(&text, minijinja::context! { s }).unwrap()
}

fn slo_of(target: f64) -> Slo {
    Slo { ttft: None, tpot: None, e2e: Some(crate::spec::Dur(std::time::Duration::from_secs(2))), attainment: target }
}

#[test]
fn the_sustainable_rate_stops_at_the_first_rate_that_fails_and_says_borderline_when_it_straddles() {
    let slo = slo_of(0.99);
    let cells = vec![cell(1.0, 400, 400), cell(2.0, 400, 400), cell(4.0, 396, 400), cell(8.0, 300, 400)];
    let s = sweep_of("g".into(), cells, Some(&slo));
    assert!(
        matches!(&s.sustainable, Sustainable::Limit { rate: 2.0, next: 4.0, why: Judgement::Straddles(_) }),
        "396/400: 97.5–99.7% straddles 99%: {:?}",
        s.sustainable
    );
    assert_eq!(
        words("sustainable(s)", &s),
        "Sustainable rate: 2 req/s sustains the SLO (e2e ≤ 2 s; attainment lower bound ≥ 99.0%); at 4 req/s \
         attainment 99.0% (95% CI 97.5–99.7%) against 99.0%, borderline."
    );
    assert!(words("borderline(s)", &s).starts_with("borderline: the next rate is not settled"));
    let clear = sweep_of("g".into(), vec![cell(1.0, 400, 400), cell(2.0, 300, 400)], Some(&slo));
    assert!(matches!(clear.sustainable, Sustainable::Limit { why: Judgement::Below(_), .. }));
    assert!(words("sustainable(s)", &clear).ends_with(", below.") && words("borderline(s)", &clear).is_empty());
    let rising = cell_of(2.0, "poisson".into(), vec![repeat(400, 400, true)], &[]);
    let r = sweep_of("g".into(), vec![cell(1.0, 400, 400), rising], Some(&slo));
    assert_eq!(r.sustainable.rate(), Some(1.0), "a rising queue fails the SLO whatever its attainment");
    let none = sweep_of("g".into(), vec![cell(1.0, 10, 400)], Some(&slo));
    assert!(matches!(none.sustainable, Sustainable::NoneSustains { lowest: 1.0, .. }));
    assert!(words("sustainable(s)", &none).starts_with("No tested rate sustains the SLO"));
    let all = sweep_of("g".into(), vec![cell(1.0, 400, 400), cell(2.5, 400, 400)], None);
    assert_eq!(
        words("sustainable(s)", &all),
        "Sustainable rate: every tested rate up to 2.5 req/s keeps up (requests in flight stay steady); the \
         limit lies above."
    );
    for s in [s, clear, r, none, all] {
        assert_eq!(s.holds(s.target.map(slo_of).as_ref()), Vec::<String>::new(), "{s:?}");
    }
}

fn req(index: u32, scheduled: f64, start: f64, e2e: f64) -> RequestRecord {
    crate::stats::fixtures::ok_request("p", index, scheduled, start, 0.01, e2e)
}

#[test]
fn a_growing_queue_is_rising_and_a_steady_one_is_not() {
    // 100 arrivals/s for 3 s; steady: every request takes 50 ms (≈5 in flight). Growing: each takes longer.
    let steady: Vec<RequestRecord> = (0..300).map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0, 0.05)).collect();
    let growing: Vec<RequestRecord> =
        (0..300).map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0, 0.05 + i as f64 / 100.0)).collect();
    for (reqs, want) in [(steady, false), (growing, true)] {
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        let w = window::window(&refs).unwrap();
        let (f, l) = in_flight_thirds(&refs, w.open_s, w.close_s);
        assert_eq!(rising(f, l), want, "{f:?} {l:?}");
    }
}

fn repeat(met: usize, requests: usize, rising_queue: bool) -> RateRepeat {
    RateRepeat {
        requests,
        span_s: 3.0,
        offered_rps: requests as f64 / 3.0,
        achieved_rps: requests as f64 / 3.0,
        met,
        goodput_rps: met as f64 / 3.0,
        tok_s: 0.0,
        p95_e2e_s: 0.1,
        in_flight_first: Some(5.0),
        in_flight_last: Some(if rising_queue { 50.0 } else { 5.0 }),
        errors: 0,
    }
}

#[test]
fn phases_that_disagree_widen_the_attainment_interval() {
    // The H200's three phases at 200/s: 418, 595 and 604 of 634, 595, 604 met the SLO.
    let reps = [repeat(418, 634, false), repeat(595, 595, false), repeat(604, 604, false)];
    let (lo, hi) = attainment_interval(&reps);
    let pooled = clopper_pearson(1617, 1833);
    assert!(lo < 0.5 && hi == 1.0 && pooled.0 > 0.86, "{lo} {hi} against pooled {pooled:?}");
    // Phases that agree keep the pooled interval.
    let same = [repeat(396, 400, false), repeat(396, 400, false)];
    assert_eq!(attainment_interval(&same), clopper_pearson(792, 800));
    // Two phases that differ by no more than sampling explains (396 and 392 of 400) still get the wider
    // Student-t interval (t at one degree of freedom is 12.7): the report says the interval spans both,
    // not that it widens only where the phases disagree beyond sampling.
    let close = [repeat(396, 400, false), repeat(392, 400, false)];
    let (lo, _) = attainment_interval(&close);
    assert!(lo < clopper_pearson(788, 800).0 - 0.01, "{lo}");
    let text = crate::report::markdown::REPORTS.iter().find(|(n, _)| *n == "rate_sweep.md").unwrap().1;
    assert!(text.contains("its 95% interval spans both the Clopper–Pearson interval over the pooled requests"));
}

#[test]
fn a_queue_rising_in_some_repeats_is_borderline_and_in_all_fails() {
    let some = cell_of(200.0, "poisson".into(), vec![repeat(400, 400, true), repeat(400, 400, false)], &[]);
    assert_eq!(judge(&some, Some(0.99)), Judgement::RisingSome { rising: 1, repeats: 2 });
    assert!(judge(&some, Some(0.99)).borderline());
    let all = cell_of(200.0, "poisson".into(), vec![repeat(400, 400, true), repeat(400, 400, true)], &[]);
    assert_eq!(judge(&all, Some(0.99)), Judgement::Rising { repeats: 2 });
    // The note says what the repeats showed: not "the server did not keep up" for a cell that kept up in one.
    let note = |c: &RateCell| {
        crate::report::markdown::environment(None)
            .render_str("{% import \"rate_findings.md\" as f %}{{ f.notes(n) }}", minijinja::context! { n => &c.notes })
            .unwrap()
    };
    assert_eq!(
        note(&some),
        "requests in flight kept rising in 1 of 2 repeats: in those the server did not keep up (no steady state)"
    );
    assert!(note(&all).ends_with("2 of 2 repeats: the server did not keep up (no steady state)"));
}

#[test]
fn lateness_counts_against_the_schedule() {
    let reqs: Vec<RequestRecord> = (0..200)
        .map(|i| req(i, i as f64 / 100.0, i as f64 / 100.0 + if i % 20 == 0 { 0.005 } else { 0.0001 }, 0.05))
        .collect();
    let refs: Vec<&RequestRecord> = reqs.iter().collect();
    let c = cell_of(100.0, "poisson".into(), vec![], &refs);
    assert!((c.late_share - 0.05).abs() < 1e-12 && !c.delivered, "5% left 5 ms late: {}", c.late_share);
    assert!((c.lateness_p50_s - 0.0001).abs() < 1e-9);
}

proptest::proptest! {
    /// Goodput never exceeds the achieved rate: a phase by time or one extended to its SLO minimum, sends
    /// late or on time, every request meeting the SLO or none.
    #[test]
    fn goodput_never_exceeds_what_was_sent(
        n in 2u32..300,
        rate in 1.0f64..500.0,
        duration in 0.1f64..5.0,
        late_ms in 0.0f64..50.0,
        e2e in 0.001f64..1.0,
    ) {
        let reqs: Vec<RequestRecord> =
            (0..n).map(|i| req(i, i as f64 / rate, i as f64 / rate + late_ms / 1000.0, e2e)).collect();
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        let slo = Slo { ttft: None, tpot: None, e2e: Some(crate::spec::Dur(std::time::Duration::from_secs(10))), attainment: 0.9 };
        let r = repeat_over(duration, &refs, Some(&slo));
        proptest::prop_assert!(r.goodput_rps <= r.achieved_rps + 1e-12, "{r:?}");
    }

    /// Every finding of a generated sweep holds against its cells (`holds`), and each is checked here
    /// once more against its predicate: a rate sustains only where its interval's lower bound reaches the
    /// target and no repeat's queue rose; the first rate that does not is where the finding says.
    #[test]
    fn every_rate_finding_holds_against_its_cells(
        cells in proptest::collection::vec(
            (
                proptest::collection::vec((0usize..=100, 80usize..=100, proptest::bool::weighted(0.15)), 1..4),
                0usize..4,
            ),
            0..7,
        ),
        target in proptest::option::of(0.8f64..0.999),
    ) {
        let slo = target.map(slo_of);
        let cells: Vec<RateCell> = cells
            .into_iter()
            .enumerate()
            .map(|(i, (reps, late))| {
                let reps: Vec<RateRepeat> = reps.into_iter().map(|(met, n, rise)| repeat(met.min(n), n, rise)).collect();
                // 100 requests of which `late` left 5 ms late: 2% and more is not delivered.
                let reqs: Vec<RequestRecord> =
                    (0..100).map(|k| req(k, f64::from(k), f64::from(k) + if (k as usize) < late { 0.005 } else { 0.0 }, 0.05)).collect();
                let refs: Vec<&RequestRecord> = reqs.iter().collect();
                cell_of(10.0 * (i + 1) as f64, "poisson".into(), reps, &refs)
            })
            .collect();
        let s = sweep_of("g".into(), cells, slo.as_ref());
        proptest::prop_assert_eq!(s.holds(slo.as_ref()), Vec::<String>::new());
        let ok = |c: &RateCell| {
            c.rising_repeats == 0 && c.late_share <= LATE_SHARE_MAX && target.is_none_or(|t| c.attainment_ci.0 >= t)
        };
        let first_bad = s.cells.iter().position(|c| !ok(c));
        match (&s.sustainable, first_bad) {
            (Sustainable::NoCells, None) => proptest::prop_assert!(s.cells.is_empty()),
            (Sustainable::AboveAll { rate }, None) => proptest::prop_assert_eq!(Some(*rate), s.cells.last().map(|c| c.rate)),
            (Sustainable::NoneSustains { lowest, .. }, Some(0)) => proptest::prop_assert_eq!(*lowest, s.cells[0].rate),
            (Sustainable::Limit { rate, next, why }, Some(i)) => {
                proptest::prop_assert!(i > 0 && s.cells[i - 1].rate == *rate && s.cells[i].rate == *next);
                let c = &s.cells[i];
                match why {
                    Judgement::Below(a) => proptest::prop_assert!(a.ci.1 < a.target && c.rising_repeats == 0),
                    Judgement::Straddles(a) => proptest::prop_assert!(a.ci.0 < a.target && a.target <= a.ci.1),
                    Judgement::Rising { repeats } => proptest::prop_assert_eq!(*repeats, c.rising_repeats),
                    Judgement::RisingSome { rising, repeats } => proptest::prop_assert!(rising < repeats && *rising == c.rising_repeats),
                    Judgement::Undelivered { late_share } => proptest::prop_assert!(*late_share > LATE_SHARE_MAX),
                    j => proptest::prop_assert!(false, "{j:?} is not a reason to fail"),
                }
            }
            (f, i) => proptest::prop_assert!(false, "{f:?} where the first rate that does not sustain is {i:?}"),
        }
        for c in &s.cells {
            proptest::prop_assert!(c.goodput_rps <= c.achieved_rps * (1.0 + 1e-12), "{c:?}");
        }
    }
}

/// An edited figure or finding is caught.
#[test]
fn holds_names_an_edited_finding() {
    let slo = slo_of(0.99);
    let mut s = sweep_of("g".into(), vec![cell(1.0, 400, 400), cell(2.0, 300, 400)], Some(&slo));
    assert!(s.holds(Some(&slo)).is_empty());
    s.sustainable = Sustainable::AboveAll { rate: 2.0 };
    s.cells[0].repeats[0].goodput_rps *= 2.0;
    let bad = s.holds(Some(&slo));
    assert!(bad.iter().any(|b| b.starts_with("sustainable:")), "{bad:?}");
    assert!(bad.iter().any(|b| b.contains("goodput")), "{bad:?}");
}
