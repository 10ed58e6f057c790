//! The schedule in milliseconds: no process, no port, no file. Plans come from spec text; records are
//! synthetic (each request `tokens` tokens over a fixed time, so a cell's tokens/s is what the test says).

use super::*;
use crate::record::{PointRecord, RequestRecord, ServerRecord, Status};

const ENGINE: &str = "engine:\n  kind: command\n  command: [\"fake\", \"--port\", \"{{ port }}\", \"--capacity\", \"{{ capacity }}\"]\n  port: 18999\n";

fn spec(body: &str) -> crate::spec::Spec {
    let text = format!("name: t\n{ENGINE}{body}\nmeasure: {{memory: procfs}}\n");
    crate::spec::load_str("t.yaml", &text, &[]).unwrap().spec
}

fn plan_of(spec: &crate::spec::Spec) -> Plan {
    crate::plan::build(spec).unwrap()
}

const GRID: &str = "grid:\n  capacity: [1, 2]\n  concurrency: [1, 4]\nload:\n  concurrency: \"{{ concurrency }}\"\n  requests: 8\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s";

/// One point's records: `n` requests of 8 tokens, each taking `e2e` seconds, back to back per slot.
fn measured(group: &ServerGroup, p: &Point, attempt: u32, e2e: f64) -> (PointRecord, Vec<RequestRecord>) {
    let c = p.client.clone().unwrap();
    let requests: Vec<RequestRecord> = (0..c.requests)
        .map(|i| {
            let start = f64::from(i / c.concurrency.max(1)) * e2e;
            RequestRecord {
                point: p.id.clone(),
                attempt,
                index: i,
                scheduled_s: start,
                start_s: start,
                first_token_s: Some(start + e2e / 8.0),
                end_s: start + e2e,
                chunk_us: (1..8).map(|k| (k as f64 * e2e / 8.0 * 1e6) as u32).collect(),
                chunks: 8,
                prompt_tokens: Some(8),
                completion_tokens: Some(8),
                sent_tokens: Some(8),
                http_status: Some(200),
                ..Default::default()
            }
        })
        .collect();
    let wall_s = requests.iter().map(|r| r.end_s).fold(0.0, f64::max);
    let point = PointRecord {
        attempt,
        repeat: p.repeat,
        vars: p.vars.clone(),
        model: "zero".into(),
        ..PointRecord::measured(p.id.clone(), group.id.clone(), c, wall_s)
    };
    (point, requests)
}

fn server(group: &ServerGroup, status: Status) -> ServerRecord {
    let mut r = server_template(group);
    r.status = status;
    r.ready_s = Some(1.0);
    r
}

fn server_template(group: &ServerGroup) -> ServerRecord {
    ServerRecord {
        id: group.id.clone(),
        vars: group.vars.clone(),
        argv: group.server.argv.clone(),
        env: group.server.env.clone(),
        base_url: group.server.base_url.clone(),
        status: Status::Ok,
        error: None,
        log_tail: None,
        started_at: String::new(),
        ready_s: None,
        max_model_len: None,
        served_max_model_len: None,
        served_model: None,
        memory_source: crate::record::Source::Procfs,
        baseline: Default::default(),
        at_ready: None,
        timeline: Vec::new(),
        log: Default::default(),
        cache_config_info: None,
        version: None,
        model: None,
        stop: None,
        release: None,
        pids: Vec::new(),
        predicted: None,
        slot: None,
        warnings: Vec::new(),
    }
}

/// A serial executor in a loop, without processes: carries out the first step each time, with every
/// request of a group taking `e2e(group, point)` seconds and the starts `fails` names failing. Returns the
/// steps it took and how it ended.
struct Sim<'a> {
    s: &'a Schedule<'a>,
    rec: Recorded,
    session: Session,
    fails: Vec<String>,
}

impl<'a> Sim<'a> {
    fn new(s: &'a Schedule<'a>) -> Self {
        Sim { s, rec: Recorded::default(), session: Session::default(), fails: Vec::new() }
    }

    fn step(&mut self, e2e: &dyn Fn(&ServerGroup, &Point) -> f64) -> Step {
        let steps = self.s.next_steps(&self.rec, &self.session);
        // Serial: a step on the running group comes first; a start only when nothing is up.
        let step = steps[0].clone();
        match &step {
            Step::StartGroup { group, points } => {
                self.session.begin(group, points.clone());
                if self.fails.contains(group) {
                    let g = self.s.group(group).unwrap();
                    self.rec.servers.push(server(g, Status::Failed));
                    self.session.started_as(group, Err(true));
                } else {
                    self.session.started_as(group, Ok(()));
                }
            }
            Step::Measure { group, point, .. } => {
                let g = self.s.group(group).unwrap();
                let p = self.s.point(group, point).unwrap();
                self.session.measuring(group, point);
                let (pr, reqs) = measured(g, p, 0, e2e(g, p));
                self.rec.points.push(pr);
                self.rec.requests.extend(reqs);
                self.session.measured(group, false, false);
            }
            Step::Skip { group, point, .. } => self.session.skipped(group, point),
            Step::StopGroup { group, .. } => {
                self.session.stopping(group);
                let g = self.s.group(group).unwrap();
                self.rec.servers.push(server(g, Status::Ok));
                self.session.stopped(group, false);
            }
            Step::Done { .. } => {}
        }
        step
    }

    fn run(&mut self, e2e: &dyn Fn(&ServerGroup, &Point) -> f64) -> (Vec<Step>, DoneReason) {
        let mut taken = Vec::new();
        for _ in 0..10_000 {
            match self.step(e2e) {
                Step::Done { reason } => return (taken, reason),
                other => taken.push(other),
            }
        }
        panic!("the schedule never said done: {taken:?}");
    }
}

fn flat(_: &ServerGroup, _: &Point) -> f64 {
    0.1
}

fn starts(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter_map(|s| if let Step::StartGroup { group, .. } = s { Some(group.as_str()) } else { None })
        .collect()
}

fn measures(steps: &[Step]) -> usize {
    steps.iter().filter(|s| matches!(s, Step::Measure { .. })).count()
}

#[test]
fn a_fresh_grid_may_start_every_group_at_once_and_measures_each_point_once() {
    let spec = spec(GRID);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let first = s.next_steps(&Recorded::default(), &Session::default());
    assert_eq!(first.len(), 2, "both groups may start now: {first:?}");
    assert!(first.iter().all(|st| matches!(st, Step::StartGroup { points, .. } if points.len() == 2)));
    let mut sim = Sim::new(&s);
    let (steps, reason) = sim.run(&flat);
    assert_eq!(reason, DoneReason::Complete);
    assert_eq!(starts(&steps), [plan.groups[0].id.as_str(), plan.groups[1].id.as_str()]);
    assert_eq!(measures(&steps), 4);
}

#[test]
fn a_running_group_comes_first_and_several_groups_can_be_in_flight() {
    let spec = spec(GRID);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let (g0, g1) = (&plan.groups[0], &plan.groups[1]);
    let mut session = Session::default();
    session.begin(&g0.id, g0.points.iter().map(|p| p.id.clone()).collect());
    session.started_as(&g0.id, Ok(()));
    let steps = s.next_steps(&Recorded::default(), &session);
    assert!(matches!(&steps[0], Step::Measure { group, .. } if group == &g0.id), "{steps:?}");
    assert!(matches!(&steps[1], Step::StartGroup { group, .. } if group == &g1.id), "{steps:?}");
    // Both up: one measure each, nothing else.
    session.begin(&g1.id, g1.points.iter().map(|p| p.id.clone()).collect());
    session.started_as(&g1.id, Ok(()));
    let steps = s.next_steps(&Recorded::default(), &session);
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|st| matches!(st, Step::Measure { .. })));
    // While both measure, nothing may run: wait.
    session.measuring(&g0.id, &g0.points[0].id);
    session.measuring(&g1.id, &g1.points[0].id);
    assert!(s.next_steps(&Recorded::default(), &session).is_empty());
}

#[test]
fn resume_in_the_middle_starts_only_what_is_not_done() {
    let spec = spec(GRID);
    let plan = plan_of(&spec);
    let done =
        plan.groups[0].points.iter().map(|p| p.id.clone()).chain([plan.groups[1].points[0].id.clone()]).collect();
    let s = Schedule::new(&spec, &plan, Rules::default(), done);
    assert_eq!(s.finished_groups(&Recorded::default()).iter().map(|g| &g.id).collect::<Vec<_>>(), [&plan.groups[0].id]);
    let mut sim = Sim::new(&s);
    let (steps, reason) = sim.run(&flat);
    assert_eq!(reason, DoneReason::Complete);
    assert_eq!(starts(&steps), [plan.groups[1].id.as_str()]);
    assert_eq!(
        steps[0],
        Step::StartGroup { group: plan.groups[1].id.clone(), points: vec![plan.groups[1].points[1].id.clone()] }
    );
    assert_eq!(measures(&steps), 1);
}

#[test]
fn a_failed_start_goes_on_to_the_next_group_unless_fail_fast() {
    let spec = spec(GRID);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let mut sim = Sim::new(&s);
    sim.fails = vec![plan.groups[0].id.clone()];
    let (steps, reason) = sim.run(&flat);
    assert_eq!((starts(&steps).len(), measures(&steps), reason), (2, 2, DoneReason::Complete));

    let rules = Rules { fail_fast: true, ..Rules::default() };
    let s = Schedule::new(&spec, &plan, rules, Default::default());
    let mut sim = Sim::new(&s);
    sim.fails = vec![plan.groups[0].id.clone()];
    let (steps, reason) = sim.run(&flat);
    assert_eq!((starts(&steps).len(), measures(&steps), reason), (1, 0, DoneReason::FailFast));
}

#[test]
fn an_interrupt_stops_the_running_group_and_starts_nothing() {
    let spec = spec(GRID);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let g0 = &plan.groups[0];
    let mut session = Session::default();
    session.begin(&g0.id, g0.points.iter().map(|p| p.id.clone()).collect());
    session.started_as(&g0.id, Ok(()));
    session.interrupted = true;
    let steps = s.next_steps(&Recorded::default(), &session);
    assert_eq!(steps, [Step::StopGroup { group: g0.id.clone(), why: StopWhy::Interrupted }]);
    session.stopping(&g0.id);
    assert!(s.next_steps(&Recorded::default(), &session).is_empty(), "wait for the stop");
    session.stopped(&g0.id, false);
    assert_eq!(s.next_steps(&Recorded::default(), &session), [Step::Done { reason: DoneReason::Interrupted }]);
}

#[test]
fn a_dead_server_gets_every_remaining_point_recorded_and_none_passed_over() {
    let spec = spec(&format!("{GRID}\nprecision: {{rel_ci: 0.5, min_repeats: 2, max_repeats: 3}}"));
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let g0 = &plan.groups[0];
    // A cell's third repeat, after two steady ones: on a live server it is passed over.
    let third = g0.points.iter().find(|p| p.repeat == 2).unwrap();
    let mut rec = Recorded::default();
    for p in g0.points.iter().filter(|p| p.client == third.client && p.repeat < 2) {
        let (pr, reqs) = measured(g0, p, 0, 0.1);
        rec.points.push(pr);
        rec.requests.extend(reqs);
    }
    let mut session = Session::default();
    session.begin(&g0.id, vec![third.id.clone()]);
    session.started_as(&g0.id, Ok(()));
    assert!(matches!(&s.next_steps(&rec, &session)[0], Step::Skip { why: SkipWhy::PrecisionMet { .. }, .. }));
    // Once the server died, it is recorded (as not run) like every point after the death.
    session.starts[0].dead = true;
    assert!(matches!(&s.next_steps(&rec, &session)[0], Step::Measure { point, .. } if point == &third.id));
}

#[test]
fn precision_reached_passes_over_the_repeats_a_cell_does_not_need() {
    let spec = spec(&format!("{GRID}\nprecision: {{rel_ci: 0.05, min_repeats: 2, max_repeats: 4}}"));
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    // Steady cells: every repeat agrees, so each cell stops at its second repeat.
    let (steps, _) = Sim::new(&s).run(&flat);
    let cells = 4;
    assert_eq!(measures(&steps), cells * 2);
    let skipped = steps.iter().filter(|s| matches!(s, Step::Skip { why: SkipWhy::PrecisionMet { .. }, .. })).count();
    assert_eq!(skipped, cells * 2);
    // Noisy cells (each repeat twice as slow as the one before): every repeat is measured.
    let noisy = |_: &ServerGroup, p: &Point| 0.1 * 2f64.powi(p.repeat as i32);
    let (steps, _) = Sim::new(&s).run(&noisy);
    assert_eq!(measures(&steps), cells * 4);
}

#[test]
fn an_edited_spec_keeps_the_group_and_measures_only_its_new_points() {
    let before = spec(GRID);
    let plan_before = plan_of(&before);
    let after = spec(&GRID.replace("concurrency: [1, 4]", "concurrency: [1, 4, 8]"));
    let plan_after = plan_of(&after);
    assert_eq!(plan_before.groups[0].id, plan_after.groups[0].id, "the server did not change");
    let done = plan_before.points().map(|(_, p)| p.id.clone()).collect();
    let s = Schedule::new(&after, &plan_after, Rules::default(), done);
    let (steps, _) = Sim::new(&s).run(&flat);
    assert_eq!(starts(&steps).len(), 2, "each group again, for its new point only");
    assert_eq!(measures(&steps), 2);
}

const SEARCH: &str = "grid:\n  capacity: [1]\nload:\n  duration: 2s\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\nslo: {ttft: 50ms, attainment: 0.9}\nsearch: {rate: {low: 10, high: 160, tolerance: 0.5}}";

#[test]
fn a_rate_search_measures_one_rung_at_a_time_within_its_probes() {
    let spec = spec(SEARCH);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let first = s.next_steps(&Recorded::default(), &Session::default());
    assert!(matches!(&first[..], [Step::StartGroup { points, .. }] if points.len() == 1), "{first:?}");
    let (steps, reason) = Sim::new(&s).run(&flat);
    assert_eq!(reason, DoneReason::Complete);
    let max = plan.search.as_ref().unwrap().max_probes * plan.repeats as usize;
    assert!((1..=max).contains(&measures(&steps)), "{} probes, at most {max}", measures(&steps));
    // A resume of the finished search starts nothing.
    let mut sim = Sim::new(&s);
    sim.run(&flat);
    let again = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    assert_eq!(again.finished_groups(&sim.rec).len(), 1);
    assert_eq!(again.next_steps(&sim.rec, &Session::default()), [Step::Done { reason: DoneReason::Complete }]);
}

const TUNE: &str = "tune:\n  space:\n    capacity: {min: 1, max: 8}\n  objective: throughput\n  p95_budget: 5s\n  budget: {starts: 6}\n  confirm_repeats: 2\n  confirm_starts: 2\nrepeats: 2\nload:\n  concurrency: 8\n  requests: 24\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s";

/// Throughput grows with the fake's capacity, as `servelab-zero-endpoint --capacity` makes it.
fn by_capacity(g: &ServerGroup, _: &Point) -> f64 {
    let cap = g.vars.get("capacity").and_then(|v| v.to_string().parse::<f64>().ok()).unwrap_or(8.0);
    0.1 * (8.0 / cap.min(8.0)).ceil()
}

#[test]
fn a_tune_spends_exactly_its_budget_of_starts() {
    let spec = spec(TUNE);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let (steps, reason) = Sim::new(&s).run(&by_capacity);
    assert_eq!(reason, DoneReason::Complete);
    assert_eq!(starts(&steps).len(), 6, "{:?}", starts(&steps));
    // One start at a time: a proposal waits for the one before it.
    let mut session = Session::default();
    let first = s.next_steps(&Recorded::default(), &session);
    let Step::StartGroup { group, points } = &first[0] else { panic!("{first:?}") };
    session.begin(group, points.clone());
    assert!(s.next_steps(&Recorded::default(), &session).is_empty());
}

#[test]
fn max_starts_stops_a_tune_that_resume_continues() {
    let spec = spec(TUNE);
    let plan = plan_of(&spec);
    let rules = Rules { max_starts: Some(2), ..Rules::default() };
    let s = Schedule::new(&spec, &plan, rules, Default::default());
    let mut sim = Sim::new(&s);
    let (steps, reason) = sim.run(&by_capacity);
    assert_eq!((starts(&steps).len(), reason), (2, DoneReason::MaxStarts { starts: 2 }));
    // The next invocation goes on from the records, numbering its starts after the 2 made before it.
    let s2 = Schedule::new(&spec, &plan, Rules { started_before: 2, ..Rules::default() }, Default::default());
    let mut sim2 = Sim { s: &s2, rec: sim.rec.clone(), session: Session::default(), fails: Vec::new() };
    let first = match &s2.next_steps(&sim2.rec, &sim2.session)[0] {
        Step::StartGroup { group, points } => (group.clone(), points.clone()),
        other => panic!("{other:?}"),
    };
    let mut one = Session::default();
    one.begin(&first.0, first.1);
    assert_eq!(s2.ordinal(&first.0, &one), (2, 6), "the third start of a budget of 6");
    let (steps, reason) = sim2.run(&by_capacity);
    assert_eq!((starts(&steps).len(), reason), (4, DoneReason::Complete));
    // A start made again after one was cut off counts past the budget rather than reuse a number.
    let s3 = Schedule::new(&spec, &plan, Rules { started_before: 6, ..Rules::default() }, Default::default());
    assert_eq!(s3.ordinal(&first.0, &one), (6, 7));
}

#[test]
fn a_pruned_configuration_is_never_started() {
    let spec = spec(TUNE);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let first = match &s.next_steps(&Recorded::default(), &Session::default())[0] {
        Step::StartGroup { group, .. } => group.clone(),
        other => panic!("{other:?}"),
    };
    let pruned: BTreeMap<String, String> = [(first.clone(), "cannot start: test".to_owned())].into();
    let s = Schedule::new(&spec, &plan, Rules { pruned, ..Rules::default() }, Default::default());
    let (steps, _) = Sim::new(&s).run(&by_capacity);
    assert!(!starts(&steps).contains(&first.as_str()), "{first} was pruned but started");
}

#[test]
fn a_tune_whose_start_fails_is_not_asked_for_again_in_the_same_invocation() {
    let spec = spec(TUNE);
    let plan = plan_of(&spec);
    let s = Schedule::new(&spec, &plan, Rules::default(), Default::default());
    let mut sim = Sim::new(&s);
    sim.fails = plan.groups.iter().map(|g| g.id.clone()).collect();
    let (steps, reason) = sim.run(&by_capacity);
    assert!(matches!(reason, DoneReason::AskedAgain { .. } | DoneReason::Complete), "{reason:?}");
    let n = starts(&steps).len();
    let distinct: BTreeSet<&str> = starts(&steps).into_iter().collect();
    assert_eq!(distinct.len(), n, "a failed start was asked for twice: {steps:?}");
}
