use super::super::effects::{Effects, Verdict};
use super::super::objective::measured_at_starts as measured;
use super::super::{Decision, Objective, Row, TuneReport, Unit, noise};
use super::*;
use crate::record::plan::{TuneAxisPlan, TuneConfig};
use crate::record::values::Scalar;

/// x over [0, 1, 2], y over [0, 1]: groups `gXY`, defaults `d`.
fn plan() -> TunePlan {
    let axis =
        |f: &str, n: i64| TuneAxisPlan { flag: f.into(), var: f.into(), values: (0..n).map(Scalar::Int).collect() };
    let configs =
        (0..3).flat_map(|x| (0..2).map(move |y| TuneConfig { group: format!("g{x}{y}"), index: vec![x, y] })).collect();
    TunePlan {
        axes: vec![axis("x", 3), axis("y", 2)],
        objective: "throughput".into(),
        p95_budget_s: Some(5.0),
        starts: 12,
        wall_s: None,
        search_repeats: 1,
        confirm_repeats: 1,
        confirm_starts: 3,
        defaults_group: "d".into(),
        configs,
        screen: None,
    }
}

/// Rows at these per-start values (the pick `g21` with three starts), ranked as `analyze` ranks them.
fn report(values: &[(&str, Vec<f64>)], defaults: Vec<FlagDefault>) -> TuneReport {
    let mut rows: Vec<Row> = values
        .iter()
        .map(|(g, v)| Row {
            group: (*g).into(),
            setting: if *g == "d" { String::new() } else { format!("x={} y={}", &g[1..2], &g[2..3]) },
            defaults: *g == "d",
            searched: (*g != "d").then_some(1),
            search: (*g != "d").then(|| measured(&v[..1])),
            screen: None,
            confirm: (v.len() > 1).then(|| measured(v)),
            status: "ok".into(),
            note: None,
            command: format!("serve --{g}"),
            lower: None,
        })
        .collect();
    let n = noise::pooled(&rows.iter().map(super::super::rows::start_values).collect::<Vec<_>>());
    super::super::rows::rank(&mut rows, n.as_ref());
    let tp = plan();
    let fewest = Fewest::of(&tp, &rows, "g21", &defaults, n.as_ref().unwrap());
    let around = fewest.as_ref().map_or("g21".to_owned(), |f| f.pick.clone());
    let effects = Effects::of(&tp, &rows, &around, &defaults, n.as_ref(), 0.02);
    let recommended = rows.iter().find(|r| r.group == around).map(|r| r.command.clone());
    let confirm = |g: &str| rows.iter().find(|r| r.group == g).and_then(|r| r.confirm.clone());
    let gain = super::super::gain_of(confirm("g21").as_ref(), confirm("d").as_ref());
    let decision = Decision::of(false, Some("x=2 y=1"), gain.as_ref(), (4, 3), false);
    assert!(matches!(decision, Decision::Recommended { .. }), "{decision:?}");
    TuneReport {
        objective: Objective::Throughput { p95_budget_s: 5.0 },
        unit: Unit::TokS,
        rows,
        pareto: Vec::new(),
        winner: Some("g21".into()),
        gain,
        recommended,
        deploy: None,
        decision,
        flag_defaults: defaults,
        screening: None,
        fewest,
        effects,
        noise: n,
        planned: None,
        search_starts: 6,
        confirm_starts: 6,
        saved: None,
        budget_starts: 12,
        spent_s: 1.0,
        wall_s: None,
        stopped: Some(super::super::Stopped::Exhausted),
        next: None,
        more: Vec::new(),
        space: 6,
    }
}

fn read(x: i64, y: i64) -> Vec<FlagDefault> {
    [("x", x), ("y", y)]
        .map(|(f, v)| FlagDefault { flag: f.into(), value: Some(LogValue::Int(v)), source: Some(ArgSource::Resolved) })
        .to_vec()
}

fn surface() -> Vec<(&'static str, Vec<f64>)> {
    vec![
        ("g21", vec![2000.0, 2002.0, 1998.0, 2001.0]),
        ("g20", vec![1999.0]),
        ("g11", vec![1500.0]),
        ("g10", vec![1502.0]),
        ("g01", vec![1000.0]),
        ("g00", vec![1001.0]),
        ("d", vec![1000.0, 1003.0, 997.0]),
    ]
}

#[test]
fn the_tied_configuration_of_fewest_changes_is_recommended_and_holds() {
    let t = report(&surface(), read(0, 0));
    let f = t.fewest.as_ref().unwrap();
    assert_eq!((f.pick.as_str(), f.changed.clone()), ("g20", vec!["x".to_owned()]), "{f:?}");
    assert_eq!(f.tied.len(), 2, "the x = 1 rows are told from the pick: {f:?}");
    assert!(t.decision.holds(&t).is_empty(), "{:?}", t.decision.holds(&t));
    let e = t.effects.as_ref().unwrap();
    assert_eq!(e.flags[0].verdict, Verdict::Matters);
    assert_eq!(e.flags[0].contrasts[0].base, "d", "the defaults' row, of more starts, stands for x=0 y=0");
    assert_eq!(e.flags[1].verdict, Verdict::DoesNotMatter, "{:?}", e.flags[1]);

    let mut bad = t.clone();
    bad.fewest.as_mut().unwrap().pick = "g21".into();
    bad.recommended = Some("serve --g21".into());
    assert!(!bad.decision.holds(&bad).is_empty(), "the pick changes more flags than a tied row");
    let mut bad = t.clone();
    bad.effects.as_mut().unwrap().flags[0].verdict = Verdict::DoesNotMatter;
    assert!(!bad.decision.holds(&bad).is_empty(), "x's interval is nowhere near ±2%");
    let mut bad = t.clone();
    bad.effects.as_mut().unwrap().flags[1].contrasts[0].rel = 0.0;
    assert!(!bad.decision.holds(&bad).is_empty(), "a contrast the rows do not give");
    let mut bad = t;
    bad.recommended = Some("serve --g21".into());
    assert!(!bad.decision.holds(&bad).is_empty(), "the command line is not the chosen row's");
}

#[test]
fn a_default_the_search_never_ran_leaves_the_flag_unmeasured_and_one_not_read_counts_as_changed() {
    // y's default 7 is no value searched: no configuration keeps it, so both x = 2 rows change both flags.
    let t = report(&surface(), read(0, 7));
    let f = t.fewest.as_ref().unwrap();
    assert_eq!(f.pick, "g21", "no tied row changes fewer flags; the pick's bound is higher");
    assert_eq!(t.effects.as_ref().unwrap().flags[1].verdict, Verdict::NotMeasured);
    let mut none = read(0, 0);
    none[1].value = None;
    let t = report(&surface(), none);
    assert_eq!(t.fewest.as_ref().unwrap().changed, ["x", "y"]);
    assert_eq!(t.effects.as_ref().unwrap().flags[1].verdict, Verdict::DefaultNotRead);
    assert!(t.decision.holds(&t).is_empty(), "{:?}", t.decision.holds(&t));
}

#[test]
fn an_interval_wider_than_the_margin_is_unclear() {
    let mut s = surface();
    s[0].1 = vec![2000.0, 2100.0, 1900.0, 2050.0];
    s[6].1 = vec![1000.0, 1080.0, 940.0];
    let t = report(&s, read(0, 0));
    let y = &t.effects.as_ref().unwrap().flags[1];
    let (lo, hi) = y.contrasts[0].ci.unwrap();
    assert!(lo < -0.02 && hi > 0.02 && y.verdict == Verdict::Unclear, "{y:?}");
}

#[test]
fn a_default_outside_the_space_moves_alone_against_the_defaults_row_where_the_rest_are_defaults() {
    // x's default 9 is no value searched (a space fixed around a pick, say); y's default is the pick's y = 1,
    // so the pick x=2 y=1 differs from the defaults' row in x alone: that is x's effect.
    let t = report(&surface(), read(9, 1));
    let e = t.effects.as_ref().unwrap();
    let x = &e.flags[0];
    assert_eq!(e.around, "g21");
    assert_eq!((x.contrasts.len(), x.contrasts[0].base.as_str(), x.contrasts[0].moved.as_str()), (1, "d", "g21"));
    assert!((x.contrasts[0].rel - 1.0).abs() < 0.01 && x.verdict == Verdict::Matters, "{x:?}");
    assert!(t.decision.holds(&t).is_empty(), "{:?}", t.decision.holds(&t));
    // Where another flag is off its default too (y's 5, also unsearched), the defaults' row differs in two.
    let t = report(&surface(), read(9, 5));
    assert_eq!(t.effects.as_ref().unwrap().flags[0].verdict, Verdict::NotMeasured);
    assert!(t.decision.holds(&t).is_empty(), "{:?}", t.decision.holds(&t));
}
