//! A tune's conclusions as typed findings: what it optimised (`Objective`), why its search stopped
//! (`Stopped`) and what it decided (`Decision`). Each variant is built only by the functions here and only
//! where its predicate over the confirmation's figures holds; `Decision::holds` checks the predicate again
//! from the rows of the report as written (property tests and `servelab report --check`). The words are the
//! templates' (`templates/findings.md`): nothing here writes English.

use super::objective::{Gain, Measured};
use super::{Row, TuneReport};
use serde::{Deserialize, Serialize};

/// What the tune maximises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// Output tokens/s of the best workload level whose p95 e2e (its interval's top) is within the budget.
    Throughput { p95_budget_s: f64 },
    /// Requests/s meeting every limit given (seconds; none given: every request that succeeds counts).
    Goodput { ttft_s: Option<f64>, tpot_s: Option<f64>, e2e_s: Option<f64> },
}

impl Objective {
    /// The plan's objective: `throughput` always carries its budget (the planner refuses one without).
    pub fn of(tp: &crate::record::plan::TunePlan, slo: Option<&crate::spec::Slo>) -> Objective {
        match tp.p95_budget_s {
            Some(b) if tp.objective == "throughput" => Objective::Throughput { p95_budget_s: b },
            _ => {
                let s = |d: Option<crate::spec::Dur>| d.map(|d| d.0.as_secs_f64());
                Objective::Goodput {
                    ttft_s: s(slo.and_then(|x| x.ttft)),
                    tpot_s: s(slo.and_then(|x| x.tpot)),
                    e2e_s: s(slo.and_then(|x| x.e2e)),
                }
            }
        }
    }
}

/// Why the search stopped starting configurations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stopped {
    /// `search` of the `budget` starts were the search's (the rest are the confirmation's), and as many ran.
    StartsUsed { budget: u32, search: usize },
    /// The server time recorded reached the wall budget.
    WallBudget { spent_s: f64, wall_s: f64 },
    /// No configuration the capacity model allows is left unmeasured.
    Exhausted,
}

impl Stopped {
    /// Why the search is over, or None while it goes on: `started` configurations of `search_budget` starts,
    /// `spent_s` of `wall_s`, and whether the search has a configuration left to propose.
    pub fn of(
        budget: u32,
        search_budget: usize,
        started: usize,
        spent_s: f64,
        wall_s: Option<f64>,
        more: bool,
    ) -> Option<Stopped> {
        if started >= search_budget {
            Some(Stopped::StartsUsed { budget, search: search_budget })
        } else if let Some(w) = wall_s.filter(|w| spent_s >= *w) {
            Some(Stopped::WallBudget { spent_s, wall_s: w })
        } else if !more {
            Some(Stopped::Exhausted)
        } else {
            None
        }
    }
}

/// The tune's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// A start is still to come: no decision yet.
    Running,
    /// No searched configuration met the objective anywhere: there is no pick to compare.
    NothingServed,
    /// Fewer than two fresh starts of the pick or of the defaults: no interval over starts, so the gain
    /// `rel` is shown with the interval over repeats on one server (`repeat_ci`), which decides nothing.
    NotShown { setting: String, rel: f64, repeat_ci: Option<(f64, f64)>, winner_starts: usize, defaults_starts: usize },
    /// The whole interval over server starts of the gain over the defaults lies above 0.
    Recommended { setting: String, rel: f64, ci: (f64, f64) },
    /// The whole interval lies below 0.
    DefaultsBetter { setting: String, rel: f64, ci: (f64, f64) },
    /// The interval holds 0.
    DefaultsAsGood { setting: String, rel: f64, ci: (f64, f64) },
    /// There is a pick, but no gain: a confirmation start failed, or the defaults met the objective nowhere.
    NoComparison { setting: String },
    /// Measured again on fresh servers, the pick itself met the objective nowhere (every level over the p95
    /// budget, or no request within the SLO), and the defaults did no better: nothing is shown to serve the
    /// workload, so nothing is recommended over the defaults.
    PickUnmet { setting: String },
}

/// Whose command line a decision recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Winner,
    Defaults,
    /// The defaults when they were measured, else none.
    DefaultsIfMeasured,
    Nothing,
}

impl Decision {
    /// The decision from the confirmation: `running` while a start is to come, the pick's setting (None
    /// without a pick), the gain (None without a comparison), how many starts each side's figure averages and
    /// whether the pick's own confirmation met the objective nowhere (`pick_unmet`).
    pub fn of(
        running: bool,
        setting: Option<&str>,
        gain: Option<&Gain>,
        starts: (usize, usize),
        pick_unmet: bool,
    ) -> Decision {
        let Some(setting) = setting.map(str::to_owned) else {
            return if running { Decision::Running } else { Decision::NothingServed };
        };
        if running {
            return Decision::Running;
        }
        let Some(g) = gain else {
            return if pick_unmet { Decision::PickUnmet { setting } } else { Decision::NoComparison { setting } };
        };
        match g.rel_ci {
            None => Decision::NotShown {
                setting,
                rel: g.rel,
                repeat_ci: g.repeat_ci,
                winner_starts: starts.0,
                defaults_starts: starts.1,
            },
            Some(ci) if ci.0 > 0.0 => Decision::Recommended { setting, rel: g.rel, ci },
            Some(ci) if ci.1 < 0.0 => Decision::DefaultsBetter { setting, rel: g.rel, ci },
            Some(ci) => Decision::DefaultsAsGood { setting, rel: g.rel, ci },
        }
    }

    /// Whose command line goes with the decision: the pick's only where it was shown better, or where there
    /// was nothing to compare it with.
    pub fn pick(&self) -> Pick {
        match self {
            Decision::Running => Pick::Nothing,
            Decision::NothingServed | Decision::PickUnmet { .. } => Pick::DefaultsIfMeasured,
            Decision::Recommended { .. } | Decision::NoComparison { .. } => Pick::Winner,
            Decision::NotShown { .. } | Decision::DefaultsBetter { .. } | Decision::DefaultsAsGood { .. } => {
                Pick::Defaults
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Decision::Running => "running",
            Decision::NothingServed => "nothing_served",
            Decision::NotShown { .. } => "not_shown",
            Decision::Recommended { .. } => "recommended",
            Decision::DefaultsBetter { .. } => "defaults_better",
            Decision::DefaultsAsGood { .. } => "defaults_as_good",
            Decision::NoComparison { .. } => "no_comparison",
            Decision::PickUnmet { .. } => "pick_unmet",
        }
    }

    /// Checks the decision of a tune report as written against the report's own rows, by a second path: the
    /// gain and its interval over starts are recomputed from the pick's and the defaults' per-start values
    /// (not read from `gain`), the variant the predicates select is found afresh, and the recommended
    /// command line is checked to be the one that variant names. Returns what disagrees.
    pub fn holds(&self, t: &TuneReport) -> Vec<String> {
        let running = t.next.is_some() || t.stopped.is_none();
        let winner = t.winner.as_ref().and_then(|w| t.rows.iter().find(|r| &r.group == w));
        let defaults = t.rows.iter().find(|r| r.searched.is_none() && r.status != "pruned");
        let chosen = t.fewest.as_ref().and_then(|f| t.rows.iter().find(|r| r.group == f.pick)).or(winner);
        let mut bad = self.holds_over(running, (winner, chosen), defaults, t.recommended.as_deref());
        if let (Some(g), Some(w), Some(d)) =
            (&t.gain, winner.and_then(|r| r.confirm.as_ref()), defaults.and_then(|r| r.confirm.as_ref()))
            && (!same(g.winner, w.value) || !same(g.defaults, d.value) || !same(g.rel, w.value / d.value - 1.0))
        {
            bad.push(format!("gain: {:?} is not what the rows give ({} against {})", g, w.value, d.value));
        }
        if t.winner.is_some() && winner.is_none() {
            bad.push(format!("the pick {:?} has no row", t.winner));
        }
        bad.extend(stopped_holds(t));
        let pooled = super::noise::pooled(&t.rows.iter().map(super::rows::start_values).collect::<Vec<_>>());
        if pooled != t.noise {
            bad.push(format!("noise: {:?} where the rows give {pooled:?}", t.noise));
        }
        bad.extend(t.planned.iter().flat_map(super::noise::Planned::holds));
        if t.fewest.is_some() && self.pick() != Pick::Winner {
            bad.push(format!("fewest: {:?} for a decision of {}", t.fewest.as_ref().map(|f| &f.pick), self.kind()));
        }
        bad.extend(t.fewest.iter().flat_map(|f| f.holds(t)));
        bad.extend(t.effects.iter().flat_map(|e| e.holds(t)));
        if let Some(s) = &t.saved
            && (s.starts + t.search_starts != s.grid_starts.max(t.search_starts) || !s.holds().is_empty())
        {
            bad.push(format!("saved: {s:?} against {} search starts", t.search_starts));
        }
        bad
    }

    /// `holds` over its parts: whether the tune is running, the pick's row and the row recommended in its
    /// place (the one of fewest flags changed), the defaults' row and the command line written.
    fn holds_over(
        &self,
        running: bool,
        (winner, chosen): (Option<&Row>, Option<&Row>),
        defaults: Option<&Row>,
        command: Option<&str>,
    ) -> Vec<String> {
        let mut bad = Vec::new();
        let (w, d) = (winner.and_then(|r| r.confirm.as_ref()), defaults.and_then(|r| r.confirm.as_ref()));
        let compared = match (w, d) {
            (Some(w), Some(d)) if d.value > 0.0 => Some(plain_gain(w, d)),
            _ => None,
        };
        let expected = match (running, winner, &compared) {
            (true, _, _) => "running",
            (false, None, _) => "nothing_served",
            (false, Some(_), None) if w.is_some_and(|w| w.value <= 0.0) => "pick_unmet",
            (false, Some(_), None) => "no_comparison",
            (false, Some(_), Some((_, None))) => "not_shown",
            (false, Some(_), Some((_, Some((lo, _))))) if *lo > 0.0 => "recommended",
            (false, Some(_), Some((_, Some((_, hi))))) if *hi < 0.0 => "defaults_better",
            (false, Some(_), Some(_)) => "defaults_as_good",
        };
        if self.kind() != expected {
            bad.push(format!("decision: {} where the figures give {expected}", self.kind()));
        }
        let setting = match self {
            Decision::NotShown { setting, .. }
            | Decision::Recommended { setting, .. }
            | Decision::DefaultsBetter { setting, .. }
            | Decision::DefaultsAsGood { setting, .. }
            | Decision::NoComparison { setting }
            | Decision::PickUnmet { setting } => Some(setting),
            Decision::Running | Decision::NothingServed => None,
        };
        if let (Some(s), Some(r)) = (setting, winner)
            && s != &r.setting
        {
            bad.push(format!("decision: names {s}, but the pick is {}", r.setting));
        }
        let figures = match self {
            Decision::NotShown { rel, winner_starts, defaults_starts, .. } => {
                Some((*rel, None, Some((*winner_starts, *defaults_starts))))
            }
            Decision::Recommended { rel, ci, .. }
            | Decision::DefaultsBetter { rel, ci, .. }
            | Decision::DefaultsAsGood { rel, ci, .. } => Some((*rel, Some(*ci), None)),
            _ => None,
        };
        if let (Some((rel, ci, starts)), Some((plain_rel, plain_ci))) = (figures, &compared) {
            if !same(rel, *plain_rel) {
                bad.push(format!("decision: a gain of {rel}, the rows give {plain_rel}"));
            }
            if ci.is_some() && !ci.zip(*plain_ci).is_some_and(|(a, b)| same(a.0, b.0) && same(a.1, b.1)) {
                bad.push(format!("decision: an interval of {ci:?}, the rows give {plain_ci:?}"));
            }
            let counted = w.zip(d).map(|(w, d)| (w.per_start.len(), d.per_start.len()));
            if starts.is_some() && starts != counted {
                bad.push(format!("decision: {starts:?} starts, the rows hold {counted:?}"));
            }
        }
        let want = match self.pick() {
            Pick::Winner => chosen.map(|r| r.command.as_str()),
            Pick::Defaults => defaults.map(|r| r.command.as_str()),
            Pick::DefaultsIfMeasured => defaults.filter(|r| r.confirm.is_some()).map(|r| r.command.as_str()),
            Pick::Nothing => None,
        };
        if command != want {
            bad.push(format!("recommended: {command:?} where the decision names {want:?}"));
        }
        bad
    }
}

/// Why the search stopped, against the report's counts.
fn stopped_holds(t: &TuneReport) -> Vec<String> {
    match &t.stopped {
        Some(Stopped::StartsUsed { budget, search }) if *budget != t.budget_starts || t.search_starts < *search => {
            vec![format!("stopped: {search} search starts of {budget} used, but {} ran", t.search_starts)]
        }
        Some(Stopped::WallBudget { spent_s, wall_s })
            if Some(*wall_s) != t.wall_s || !same(*spent_s, t.spent_s) || spent_s < wall_s =>
        {
            vec![format!("stopped: {spent_s} s over a wall budget of {wall_s} s, but {} s were spent", t.spent_s)]
        }
        Some(Stopped::Exhausted) if t.search_starts > t.space => {
            vec![format!("stopped: {} configurations measured of {}", t.search_starts, t.space)]
        }
        _ => Vec::new(),
    }
}

/// The gain and its interval over starts from the per-start values: the paired t interval of the pick's
/// start k minus the defaults' start k over the defaults' mean, written out.
fn plain_gain(w: &Measured, d: &Measured) -> (f64, Option<(f64, f64)>) {
    let rel = w.value / d.value - 1.0;
    let mut diffs = Vec::new();
    for (i, k) in w.start_index.iter().enumerate() {
        if let Some(j) = d.start_index.iter().position(|x| x == k) {
            diffs.push(w.per_start[i] - d.per_start[j]);
        }
    }
    let n = diffs.len();
    if n < 2 {
        return (rel, None);
    }
    let m = diffs.iter().sum::<f64>() / n as f64;
    let var = diffs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let Some(t) = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok().map(|s| s.inverse_cdf(0.975)) else {
        return (rel, None);
    };
    let half = t * (var / n as f64).sqrt();
    (rel, Some(((m - half) / d.value, (m + half) / d.value)))
}

/// Two figures agree when they differ by rounding alone.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    use super::super::objective::measured_at_starts as measured;

    fn row(group: &str, setting: &str, searched: Option<usize>, confirm: Option<Measured>) -> Row {
        Row {
            group: group.into(),
            setting: setting.into(),
            defaults: searched.is_none(),
            searched,
            search: confirm.clone(),
            screen: None,
            confirm,
            status: "ok".into(),
            note: None,
            command: format!("vllm serve m --{group}"),
            lower: None,
        }
    }

    /// A finished tune whose pick and defaults were measured again with these per-start values (None: the
    /// side's confirmation failed), decided as `tune::analyze` decides.
    fn report(winner: Option<Vec<f64>>, defaults: Option<Vec<f64>>, picked: bool, running: bool) -> TuneReport {
        let (w, d) = (winner.as_deref().map(measured), defaults.as_deref().map(measured));
        let gain = super::super::objective::gain_of(w.as_ref(), d.as_ref());
        let setting = picked.then_some("max-num-seqs=64");
        let starts = (w.as_ref().map_or(0, |m| m.per_start.len()), d.as_ref().map_or(0, |m| m.per_start.len()));
        let unmet = w.as_ref().is_some_and(|m| m.value <= 0.0);
        let decision = Decision::of(running, setting, gain.as_ref(), starts, unmet);
        let rows = vec![row("w", "max-num-seqs=64", Some(1), w), row("d", "", None, d)];
        let recommended = match decision.pick() {
            Pick::Winner => Some(rows[0].command.clone()),
            Pick::Defaults => Some(rows[1].command.clone()),
            Pick::DefaultsIfMeasured => rows[1].confirm.as_ref().map(|_| rows[1].command.clone()),
            Pick::Nothing => None,
        };
        let noise = super::super::noise::pooled(&rows.iter().map(super::super::rows::start_values).collect::<Vec<_>>());
        TuneReport {
            objective: Objective::Throughput { p95_budget_s: 5.0 },
            unit: super::super::Unit::TokS,
            rows,
            pareto: Vec::new(),
            winner: picked.then(|| "w".into()),
            gain,
            recommended,
            deploy: None,
            decision,
            flag_defaults: Vec::new(),
            fewest: None,
            effects: None,
            noise,
            planned: None,
            search_starts: 3,
            confirm_starts: 4,
            saved: None,
            screening: None,
            budget_starts: 7,
            spent_s: 100.0,
            wall_s: None,
            stopped: (!running).then_some(Stopped::StartsUsed { budget: 7, search: 3 }),
            next: None,
            more: Vec::new(),
            space: 20,
        }
    }

    fn words(d: &Decision) -> String {
        crate::report::markdown::environment(None)
            .render_str("{% import \"findings.md\" as f %}{{ f.decision(d) }}", minijinja::context! { d })
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Over generated confirmations (1–4 starts a side, gains from −30% to +30%, noise up to ±20%): the
        /// decision holds against its rows, its predicate holds against the gain's interval, and its words
        /// carry the gain it was decided on.
        #[test]
        fn every_decision_holds_against_its_gain(
            base in 500f64..20_000.0,
            shift in -0.3f64..0.3,
            noise in proptest::collection::vec(-0.2f64..0.2, 8),
            nw in 1usize..5,
            nd in 1usize..5,
            winner_ok in proptest::bool::weighted(0.9),
            defaults_ok in proptest::bool::weighted(0.9),
            picked in proptest::bool::weighted(0.9),
            winner_met in proptest::bool::weighted(0.9),
            defaults_met in proptest::bool::weighted(0.9),
        ) {
            // A side that met the objective nowhere on its fresh starts measures 0 at every start.
            let met = |m: bool| if m { 1.0 } else { 0.0 };
            let w: Vec<f64> =
                noise[..nw].iter().map(|n| met(winner_met) * base * (1.0 + shift) * (1.0 + n)).collect();
            let d: Vec<f64> = noise[4..4 + nd].iter().map(|n| met(defaults_met) * base * (1.0 + n)).collect();
            let t = report(winner_ok.then_some(w), defaults_ok.then_some(d), picked, false);
            let wrong = t.decision.holds(&t);
            prop_assert!(wrong.is_empty(), "{:?}: {:?}", t.decision, wrong);
            let text = words(&t.decision);
            let pct = |x: f64| format!("{:+.1}%", x * 100.0);
            match &t.decision {
                Decision::Recommended { rel, ci, .. } => {
                    prop_assert!(ci.0 > 0.0 && t.gain.as_ref().is_some_and(|g| g.significant));
                    prop_assert!(text.starts_with("Recommended: max-num-seqs=64."), "{}", text);
                    prop_assert!(text.contains(&format!("{} more", pct(*rel).trim_start_matches('+'))), "{}", text);
                    prop_assert!(t.recommended.as_deref().is_some_and(|c| c.ends_with("--w")));
                }
                Decision::DefaultsBetter { rel, ci, .. } => {
                    prop_assert!(ci.1 < 0.0);
                    prop_assert!(text.contains(&format!("{}{}", pct(*rel), format_args!(" (95% interval {} to {})", pct(ci.0), pct(ci.1)))), "{}", text);
                    prop_assert!(t.recommended.as_deref().is_some_and(|c| c.ends_with("--d")));
                }
                Decision::DefaultsAsGood { ci, .. } => {
                    prop_assert!(ci.0 <= 0.0 && ci.1 >= 0.0);
                    prop_assert!(text.starts_with("vLLM's defaults are as good"), "{}", text);
                    prop_assert!(t.recommended.as_deref().is_some_and(|c| c.ends_with("--d")));
                }
                Decision::NotShown { rel, winner_starts, defaults_starts, .. } => {
                    prop_assert!(t.gain.as_ref().is_some_and(|g| g.rel_ci.is_none()));
                    prop_assert!(*winner_starts < 2 || *defaults_starts < 2);
                    prop_assert!(text.starts_with("Not shown") && text.contains(&pct(*rel)), "{}", text);
                }
                Decision::NoComparison { .. } => {
                    prop_assert!(t.gain.is_none() && picked && t.rows[0].confirm.as_ref().is_none_or(|m| m.value > 0.0));
                    prop_assert!(t.recommended.as_deref().is_some_and(|c| c.ends_with("--w")));
                }
                Decision::PickUnmet { .. } => {
                    prop_assert!(t.gain.is_none() && picked && !winner_met);
                    prop_assert!(text.starts_with("Measured again"), "{}", text);
                    prop_assert!(t.recommended.as_deref().is_none_or(|c| c.ends_with("--d")));
                }
                Decision::NothingServed => prop_assert!(!picked),
                Decision::Running => prop_assert!(false, "a finished tune is running"),
            }
        }
    }

    /// Measured again, neither the pick nor the defaults met the objective (on a GPU: every start's p95 over
    /// the budget): the pick's search figure is no reason to deploy it, so its command line is not recommended.
    #[test]
    fn a_pick_that_meets_the_objective_nowhere_on_fresh_starts_is_not_recommended() {
        let t = report(Some(vec![0.0, 0.0]), Some(vec![0.0, 0.0]), true, false);
        assert!(matches!(t.decision, Decision::PickUnmet { .. }), "{:?}", t.decision);
        assert!(t.decision.holds(&t).is_empty(), "{:?}", t.decision.holds(&t));
        assert_eq!(t.recommended.as_deref(), Some(t.rows[1].command.as_str()));
        assert!(words(&t.decision).contains("met the objective nowhere"), "{}", words(&t.decision));
        let mut lie = t.clone();
        lie.decision = Decision::NoComparison { setting: "max-num-seqs=64".into() };
        lie.recommended = Some(t.rows[0].command.clone());
        assert!(!lie.decision.holds(&lie).is_empty(), "the pick's command line for a pick that met nothing");
    }

    #[test]
    fn a_tampered_decision_does_not_hold() {
        let better = report(Some(vec![1200.0, 1210.0]), Some(vec![1000.0, 1005.0]), true, false);
        assert!(matches!(better.decision, Decision::Recommended { .. }), "{:?}", better.decision);
        assert!(better.decision.holds(&better).is_empty());
        let mut t = better.clone();
        if let Decision::Recommended { setting, rel, ci } = &t.decision {
            t.decision = Decision::DefaultsAsGood { setting: setting.clone(), rel: *rel, ci: *ci };
        }
        t.recommended = Some(t.rows[1].command.clone());
        assert!(!t.decision.holds(&t).is_empty(), "as good where the interval is above 0");
        let mut t = better.clone();
        t.recommended = Some(t.rows[1].command.clone());
        assert!(!t.decision.holds(&t).is_empty(), "recommended, but the defaults' command line");
        let mut t = better;
        t.rows[0].confirm.as_mut().unwrap().per_start = vec![1200.0, 900.0];
        assert!(!t.decision.holds(&t).is_empty(), "the interval no longer lies above 0");
        let running = report(Some(vec![1200.0]), Some(vec![1000.0]), true, true);
        assert_eq!(running.decision, Decision::Running);
        assert!(running.decision.holds(&running).is_empty());
    }

    #[test]
    fn the_plain_interval_is_the_paired_t() {
        let (w, d) = (measured(&[10.0, 12.0, 14.0, 13.0]), measured(&[8.0, 8.0, 9.0, 10.0]));
        let (_, ci) = plain_gain(&w, &d);
        let (lo, hi) = ci.unwrap();
        // scipy: ttest_rel(a, b).confidence_interval(0.95) = (1.4457, 5.5543) for differences 2, 4, 5, 3; over 8.75.
        assert!((lo * 8.75 - 1.445_739_2).abs() < 1e-6 && (hi * 8.75 - 5.554_260_8).abs() < 1e-6, "{lo} {hi}");
    }

    #[test]
    fn objectives_and_stops_are_worded_by_the_templates() {
        let env = crate::report::markdown::environment(None);
        let say = |x: serde_json::Value, m: &str| {
            env.render_str(&format!("{{% import \"findings.md\" as f %}}{{{{ f.{m}(x) }}}}"), minijinja::context! { x })
                .unwrap()
        };
        let o = serde_json::to_value(Objective::Goodput { ttft_s: Some(0.2), tpot_s: None, e2e_s: Some(2.5) }).unwrap();
        assert_eq!(
            say(o, "objective"),
            "the highest goodput (requests/s meeting the SLO: TTFT ≤ 200 ms, e2e ≤ 2.5 s) among the workload's rates"
        );
        let s = serde_json::to_value(Stopped::WallBudget { spent_s: 802.4, wall_s: 800.0 }).unwrap();
        assert_eq!(say(s, "stopped"), "802 s of server time recorded, over the wall budget of 800 s");
    }
}
