//! A tune read from its records (`servelab tune`): each configuration's objective with its interval, the
//! search's next start (the GP of `gp` over what was measured), the confirmation of the winner and of vLLM's
//! defaults on fresh servers, and the decision. Pure: the executor asks it what to start next, the report
//! renders it, and both see the same records, so a tune resumes and re-renders.
//!
//! - `gp`: the search's model (a Gaussian process with expected improvement over a discrete space);
//! - `objective`: a configuration's objective from its records, and the gain over the defaults;
//! - `schedule`: the schedule's inputs (what was started, what to start next, the confirmation's order);
//! - `screen`: screening (a short phase first, the full one for finalists) and its finalist rule;
//! - `rows`: the report's table and Pareto points;
//! - `decision`: the typed findings (objective, why the search stopped, the decision) and their `holds()`.

pub mod decision;
pub mod effects;
pub mod flags;
pub mod gp;
pub mod noise;
pub mod objective;
mod rows;
pub mod schedule;
pub mod screen;

pub use decision::{Decision, Objective, Pick, Stopped};
pub use effects::{Effects, Verdict};
pub use flags::{Fewest, FlagDefault};
pub use gp::{Axis, Config, Observation, Step, configs, step};
pub use noise::{Noise, Planned};
pub use objective::{Gain, Measured, RowNote, gain_of};
pub use schedule::{InFlight, Next, screened_out};
pub use screen::{ScreenNoise, Screening};

use crate::record::Recorded;
use crate::record::plan::{Plan, ServerGroup, TuneConfig, TunePlan};
use crate::spec::Spec;
use schedule::{Ask, Phases, Search, confirm_order, group};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A point of the Pareto chart: one workload level of one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    /// The tuned flags' values (empty for vLLM's defaults).
    pub setting: String,
    /// The point is vLLM's defaults' (the report names them).
    #[serde(default)]
    pub defaults: bool,
    pub level: String,
    /// Output tokens/s of the server divided by its GPUs (tensor-parallel size).
    pub per_gpu: f64,
    /// Output tokens/s one request sees while decoding: 1 / median time per output token.
    pub per_user: f64,
    pub on_front: bool,
}

/// The search against the full grid (every configuration the capacity model allows, started once and
/// measured in full): server starts, and measurement time, each used and saved. Apart, because a start costs
/// its ready time whatever is measured on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Configurations the full grid would start (every one not pruned).
    pub grid_starts: usize,
    /// Search starts made.
    pub starts_used: usize,
    /// Search starts not made.
    pub starts: usize,
    /// Seconds of one full search phase, on average over the starts measured in full.
    pub measure_s_per_start: f64,
    /// Measurement seconds the full grid would spend: every start at that average.
    pub grid_measure_s: f64,
    /// Measurement seconds the search recorded: its short phases and its full ones.
    pub measure_s_used: f64,
    /// Measurement seconds not spent: the grid's less the search's.
    pub measure_s: f64,
    /// Seconds of server readiness per start, on average (what each start not made also saves).
    pub ready_s_per_start: f64,
}

impl Saved {
    /// Checks that used and saved add up to the grid's, starts and seconds each.
    pub fn holds(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if self.starts != self.grid_starts.saturating_sub(self.starts_used) {
            bad.push(format!(
                "saved: {} + {} starts is not the grid's {}",
                self.starts_used, self.starts, self.grid_starts
            ));
        }
        let grid = self.measure_s_per_start * self.grid_starts as f64;
        let tol = 1e-9 * grid.abs().max(1.0);
        if (grid - self.grid_measure_s).abs() > tol || (grid - self.measure_s_used - self.measure_s).abs() > tol {
            bad.push(format!(
                "saved: {} s of the grid less {} s used is not the {} s saved",
                self.grid_measure_s, self.measure_s_used, self.measure_s
            ));
        }
        bad
    }

    /// The search's starts and their records against the grid of `allowed` configurations.
    fn of(search: &Search<'_>, rec: &Recorded, allowed: usize, ph: Phases) -> Option<Saved> {
        let groups: Vec<&str> = search.started.iter().map(|c| c.group.as_str()).collect();
        let secs = |g: &str, f: &dyn Fn(u32) -> bool| -> f64 {
            rec.points.iter().filter(|p| p.group == g && f(p.repeat)).map(|p| p.wall_s).sum()
        };
        let full: Vec<f64> = groups
            .iter()
            .filter(|g| search.measured.get(*g).is_some_and(Option::is_some))
            .map(|g| secs(g, &|r| r < ph.sr))
            .collect();
        let used: f64 = groups.iter().map(|g| secs(g, &|r| ph.searched(r))).sum();
        let ready: Vec<f64> =
            rec.servers.iter().filter(|s| groups.contains(&s.id.as_str())).filter_map(|s| s.ready_s).collect();
        if full.is_empty() {
            return None;
        }
        let per = full.iter().sum::<f64>() / full.len() as f64;
        let ready_per = if ready.is_empty() { 0.0 } else { ready.iter().sum::<f64>() / ready.len() as f64 };
        Some(Saved {
            grid_starts: allowed,
            starts_used: groups.len(),
            starts: allowed.saturating_sub(groups.len()),
            measure_s_per_start: per,
            grid_measure_s: per * allowed as f64,
            measure_s_used: used,
            measure_s: per * allowed as f64 - used,
            ready_s_per_start: ready_per,
        })
    }
}

/// A configuration to deploy: the model and the flags of `vllm serve`, each a YAML key and scalar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    pub model: String,
    pub flags: Vec<DeployFlag>,
}

/// One flag of `vllm serve` as a config file entry: `max-num-seqs: 256`; a bare flag is `true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployFlag {
    pub name: String,
    /// The value as a YAML scalar that vLLM's reader (PyYAML, then `str()`) turns back into the same text: a
    /// plain decimal number as written, `true` for a bare flag, anything else quoted.
    pub yaml: String,
}

/// Flags that bind the server to this machine (its address), left out of a config to deploy.
const LOCAL_FLAGS: [&str; 2] = ["host", "port"];

impl Deploy {
    /// The flags after `serve MODEL` in a server's argv. None where no config file says the same: a server
    /// started with `--config` (its flags are in that file, which the records hold by hash only) or given a
    /// flag twice (a YAML key holds one value; vLLM keeps the last).
    pub fn of(argv: &[String]) -> Option<Deploy> {
        let serve = argv.iter().position(|a| a == "serve")?;
        let model = argv.get(serve + 1).filter(|m| !m.starts_with("--"))?.clone();
        let mut flags = Vec::new();
        let mut rest = argv[serve + 2..].iter().peekable();
        while let Some(a) = rest.next() {
            let name = a.strip_prefix("--")?;
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (name.to_owned(), rest.next_if(|v| !v.starts_with("--")).cloned()),
            };
            if LOCAL_FLAGS.contains(&name.as_str()) {
                continue;
            }
            if name == "config" || flags.iter().any(|f: &DeployFlag| f.name == name) {
                return None;
            }
            let yaml = match value {
                None => "true".to_owned(),
                Some(v) if plain_number(&v) => v,
                Some(v) => serde_json::to_string(&v).unwrap_or_default(),
            };
            flags.push(DeployFlag { name, yaml });
        }
        Some(Deploy { model, flags })
    }
}

/// Whether vLLM reads `v` written plain in its config file back as the same text: YAML 1.1 (PyYAML) takes
/// `010` for 8, `1e5` for a string and `1.0e+5` for 100000.0, and `str()` writes a float its shortest way
/// (`0.90` becomes `0.9`), so only canonical integers and decimals stay plain; `true` as a value is quoted
/// too (plain, vLLM would pass the flag bare).
fn plain_number(v: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = unsigned.split_once('.').map_or((unsigned, None), |(i, f)| (i, Some(f)));
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    match frac {
        None => true,
        Some(f) if !digits(f) => false,
        Some(_) => {
            // Python prints floats from 1e-4 to below 1e16 without an exponent, as Rust's Display does.
            let x: f64 = unsigned.parse().unwrap_or(f64::NAN);
            let shown = format!("{x}");
            let shown = if shown.contains('.') { shown } else { format!("{shown}.0") };
            (x == 0.0 || (1e-4..1e16).contains(&x)) && shown == unsigned
        }
    }
}

/// The unit of a tune's objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Output tokens/s.
    TokS,
    /// Requests/s meeting the SLO.
    GoodputRps,
}

/// A configuration of the tune as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub group: String,
    /// `max-num-seqs=16 max-num-batched-tokens=2048`; empty for vLLM's defaults.
    pub setting: String,
    /// The row is vLLM's defaults (every tuned flag left out; the templates name it).
    #[serde(default)]
    pub defaults: bool,
    /// The order of its search start (1 = first), None for vLLM's defaults.
    pub searched: Option<usize>,
    pub search: Option<Measured>,
    /// Screening's short phase on the search start (None without screening); never a sample of the
    /// between-start noise nor ranked by it.
    #[serde(default)]
    pub screen: Option<Measured>,
    pub confirm: Option<Measured>,
    /// `ok`, `screened` (its short phase showed it no finalist), `failed` (start or every point), `pruned`.
    pub status: String,
    pub note: Option<RowNote>,
    pub command: String,
    /// The one-sided 95% lower bound of its best-backed figure (the confirmation's where there is one, else
    /// the search's) under the pooled between-start noise, and the starts behind it; rows rank by it.
    pub lower: Option<Lower>,
}

/// A lower confidence bound and the starts it rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lower {
    pub value: f64,
    pub starts: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// What the tune maximises (worded by the templates).
    pub objective: Objective,
    /// The objective's unit (worded by the templates).
    pub unit: Unit,
    /// Every measured configuration, best search objective first; then the pruned ones.
    pub rows: Vec<Row>,
    pub pareto: Vec<ParetoPoint>,
    pub winner: Option<String>,
    pub gain: Option<Gain>,
    /// The command line the tune recommends (the winner's, or the defaults' when they are as good).
    pub recommended: Option<String>,
    /// The recommended configuration as `vllm serve --config` takes it (vLLM's flag names), for
    /// `recommended.yaml`; None without a recommendation or for a server that is not `vllm serve`.
    pub deploy: Option<Deploy>,
    /// What the tune decided, from the confirmation's gain (`stats::tune::decision`; worded by the templates).
    pub decision: Decision,
    /// Each tuned flag's default as the defaults' server resolved it (its startup log), or not read.
    #[serde(default)]
    pub flag_defaults: Vec<FlagDefault>,
    /// Where the decision recommends the search's pick: the configuration tied with it under the noise that
    /// changes the fewest flags from those defaults, which `recommended` and `deploy` then name.
    #[serde(default)]
    pub fewest: Option<Fewest>,
    /// Each tuned flag's effect around the recommended configuration (the pick where the defaults are
    /// recommended), with its interval, and whether it matters here.
    #[serde(default)]
    pub effects: Option<Effects>,
    /// The between-start noise pooled across every configuration with two or more starts at one level.
    pub noise: Option<Noise>,
    /// What the confirmation needs, worked out after its first pair; None before it or without a noise.
    pub planned: Option<Planned>,
    pub search_starts: usize,
    pub confirm_starts: usize,
    /// What the search saved against measuring every configuration the capacity model allows once, starts
    /// and measurement time apart (a start costs its ready time whatever is measured on it).
    pub saved: Option<Saved>,
    /// What screening did (None without it).
    pub screening: Option<Screening>,
    pub budget_starts: u32,
    /// Server time recorded (ready times and phases), against the wall budget.
    pub spent_s: f64,
    pub wall_s: Option<f64>,
    /// Why the search stopped, once it has.
    pub stopped: Option<Stopped>,
    pub next: Option<Next>,
    /// With slots: further starts that may begin beside `next` (the search's batch by constant liar, or the
    /// other half of a confirmation pair). Never rendered.
    #[serde(skip)]
    pub more: Vec<Next>,
    pub space: usize,
}

pub(crate) fn setting_of(tp: &TunePlan, c: &TuneConfig) -> String {
    tp.axes.iter().zip(&c.index).map(|(a, &i)| format!("{}={}", a.flag, a.values[i])).collect::<Vec<_>>().join(" ")
}

/// The server's command line as a shell would take it.
pub fn command_of(group: &ServerGroup) -> String {
    group.server.argv.iter().map(|a| crate::record::plan::shell_word(a)).collect::<Vec<_>>().join(" ")
}

/// Reads a tune from its records. `pruned`: configurations the capacity model ruled out (group → why).
pub fn analyze(spec: &Spec, plan: &Plan, rec: &Recorded, pruned: &BTreeMap<String, String>) -> Option<TuneReport> {
    analyze_in(spec, plan, rec, pruned, &InFlight { groups: &[], free: 1 })
}

/// vLLM's defaults as read, the fewest-flags pick, each flag's effect, and the chosen configuration's group.
type FlagFindings = (Vec<FlagDefault>, Option<Fewest>, Option<Effects>, Option<String>);

/// The flags findings: vLLM's defaults as the defaults' server logged them, the fewest-flags pick among the
/// configurations tied with the winner (only where the winner is recommended), each flag's effect around the
/// chosen configuration, and its group (the winner where no fewer-flags one ties).
fn flag_findings(
    spec: &Spec,
    tp: &TunePlan,
    rec: &Recorded,
    rows: &[Row],
    winner: Option<&str>,
    winner_recommended: bool,
    noise: Option<&noise::Noise>,
) -> FlagFindings {
    let defaults_server = rec.servers.iter().find(|s| s.id == tp.defaults_group);
    let flag_defaults = flags::defaults_of(tp, defaults_server);
    let fewest =
        winner.filter(|_| winner_recommended).zip(noise).and_then(|(w, n)| Fewest::of(tp, rows, w, &flag_defaults, n));
    let chosen = fewest.as_ref().map(|f| f.pick.clone()).or_else(|| winner.map(str::to_owned));
    let margin = spec.tune.as_ref().map_or(crate::spec::DEFAULT_EQUIVALENCE_MARGIN, crate::spec::Tune::margin);
    let effects = chosen.as_deref().and_then(|g| Effects::of(tp, rows, g, &flag_defaults, noise, margin));
    (flag_defaults, fewest, effects, chosen)
}

/// `analyze` as the schedule sees it with starts in flight: those count as started (their configurations are
/// not proposed again, and the search's GP takes them at the mean of what was measured — a constant liar), and
/// up to `free` starts are proposed at once. A confirmation waits for every start in flight, and with two free
/// slots starts its next pair together, so the ABBA order puts each on the other slot the next time.
pub fn analyze_in(
    spec: &Spec,
    plan: &Plan,
    rec: &Recorded,
    pruned: &BTreeMap<String, String>,
    inflight: &InFlight<'_>,
) -> Option<TuneReport> {
    let tp = plan.tune.as_ref()?;
    let ph = Phases::of(tp);
    let allowed = |cfg: &Vec<usize>| tp.configs.iter().any(|c| &c.index == cfg && !pruned.contains_key(&c.group));
    let search = Search::of(spec, plan, tp, rec, &allowed, inflight);
    let spent_s = spent_s(rec);
    let search_budget = tp.starts.saturating_sub(2 * ph.cs) as usize;
    let stopped =
        Stopped::of(tp.starts, search_budget, search.started.len(), spent_s, tp.wall_s, search.step.next.is_some());
    let winner = winner(tp, &search);
    let order = confirm_order(winner.as_ref(), &tp.defaults_group, ph.cs);
    let ask = Ask {
        plan,
        tp,
        rec,
        search: &search,
        search_budget,
        stopped: stopped.is_some(),
        order: &order,
        allowed: &allowed,
    };
    let (next, more) = schedule::nexts(&ask, inflight);
    let defaults = rows::confirmed(spec, tp, rec, &tp.defaults_group);
    let mut rows = rows::rows(spec, plan, tp, rec, &search, defaults.as_ref(), pruned);
    let noise = noise::pooled(&rows.iter().map(rows::start_values).collect::<Vec<_>>());
    rows::rank(&mut rows, noise.as_ref());
    let win_confirm = winner.as_deref().and_then(|g| rows::confirmed(spec, tp, rec, g));
    let gain = gain_of(win_confirm.as_ref(), defaults.as_ref());
    let winner_setting = rows.iter().find(|r| Some(&r.group) == winner.as_ref()).map(|r| r.setting.clone());
    let starts = |m: &Option<Measured>| m.as_ref().map_or(0, |m| m.per_start.len());
    let decision = Decision::of(
        next.is_some() || stopped.is_none(),
        winner_setting.as_deref(),
        gain.as_ref(),
        (starts(&win_confirm), starts(&defaults)),
        win_confirm.as_ref().is_some_and(|m| m.value <= 0.0),
    );
    let (flag_defaults, fewest, effects, chosen) =
        flag_findings(spec, tp, rec, &rows, winner.as_deref(), decision.pick() == Pick::Winner, noise.as_ref());
    let recommended = recommended(plan, tp, &decision, chosen.as_ref(), defaults.is_some());
    let deploy = recommended.as_ref().and_then(|(g, _)| Deploy::of(&g.server.argv));
    let recommended = recommended.map(|(_, c)| c);
    let pareto = rows::pareto(spec, tp, rec, &rows);
    let planned = rows::planned(&rows, winner.as_deref(), ph.cs);
    let confirm_starts = order
        .iter()
        .filter(|(g, k)| rec.points.iter().any(|p| &p.group == g && ph.start(*k).contains(&p.repeat)))
        .count();
    Some(TuneReport {
        objective: Objective::of(tp, spec.slo.as_ref()),
        unit: if tp.objective == "goodput" { Unit::GoodputRps } else { Unit::TokS },
        rows,
        pareto,
        winner,
        gain,
        recommended,
        deploy,
        decision,
        flag_defaults,
        fewest,
        effects,
        noise,
        planned,
        search_starts: search.started.len(),
        confirm_starts,
        saved: Saved::of(&search, rec, tp.configs.len().saturating_sub(pruned.len()), ph),
        screening: screening(tp, &search),
        budget_starts: tp.starts,
        spent_s,
        wall_s: tp.wall_s,
        stopped,
        next,
        more,
        space: tp.configs.len(),
    })
}

/// The command line the decision names: the chosen configuration's (the pick, or the one of fewest flags
/// changed tied with it), the defaults' (where measured, when nothing served), or none.
fn recommended<'a>(
    plan: &'a Plan,
    tp: &TunePlan,
    d: &Decision,
    winner: Option<&String>,
    measured: bool,
) -> Option<(&'a ServerGroup, String)> {
    let g = match d.pick() {
        Pick::Winner => winner.cloned(),
        Pick::Defaults => Some(tp.defaults_group.clone()),
        Pick::DefaultsIfMeasured => measured.then(|| tp.defaults_group.clone()),
        Pick::Nothing => None,
    };
    g.and_then(|g| group(plan, &g)).map(|g| (g, command_of(g)))
}

/// Server time recorded: every start's ready time (the earlier starts of a group started again included) and
/// every point's wall time.
fn spent_s(rec: &Recorded) -> f64 {
    let starts = rec.servers.iter().chain(&rec.earlier_starts);
    starts.filter_map(|s| s.ready_s).sum::<f64>() + rec.points.iter().map(|p| p.wall_s).sum::<f64>()
}

/// What screening did: configurations screened out, those measured in full, the short phase's noise.
fn screening(tp: &TunePlan, search: &Search<'_>) -> Option<Screening> {
    let share = tp.screen?;
    let s = &search.screens;
    Some(Screening {
        share,
        screened_only: search
            .started
            .iter()
            .filter(|c| s.out(&c.group) && s.short.get(&c.group).is_some_and(Option::is_some))
            .count(),
        full: search.measured.values().filter(|m| m.is_some()).count(),
        noise: s.noise.clone(),
    })
}

/// The search's pick: its best configuration measured in full, unless it met the objective nowhere (no level
/// within the budget).
fn winner(tp: &TunePlan, search: &Search<'_>) -> Option<String> {
    let config_group = |cfg: &Vec<usize>| tp.configs.iter().find(|c| &c.index == cfg).map(|c| c.group.clone());
    search
        .best
        .as_ref()
        .and_then(config_group)
        .filter(|g| search.measured.get(g.as_str()).and_then(Option::as_ref).is_some_and(|m| m.value > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployable_config_takes_vllms_flag_names_and_leaves_the_address_out() {
        let argv: Vec<String> =
            "vllm serve models/m --max-num-seqs 16 --enforce-eager --dtype=bfloat16 --port 8000 --host 127.0.0.1 --max-num-batched-tokens 512"
                .split(' ')
                .map(str::to_owned)
                .collect();
        let d = Deploy::of(&argv).unwrap();
        assert_eq!(d.model, "models/m");
        let lines: Vec<String> = d.flags.iter().map(|f| format!("{}: {}", f.name, f.yaml)).collect();
        assert_eq!(
            lines,
            ["max-num-seqs: 16", "enforce-eager: true", "dtype: \"bfloat16\"", "max-num-batched-tokens: 512"]
        );
        assert_eq!(Deploy::of(&["servelab-zero-endpoint".to_owned(), "--port".to_owned()]), None);
    }

    #[test]
    fn a_value_stays_plain_only_where_vllm_reads_it_back_as_written() {
        let plain = ["16", "-1", "0", "0.9", "1.0", "0.0001", "2048.5"];
        let quoted = ["010", "00", "0.90", "1e5", "1.0e+5", "inf", "nan", ".5", "5.", "+5", "1_000", "true", "0x10"];
        for v in plain {
            assert!(plain_number(v), "{v} should stay plain");
        }
        for v in quoted {
            assert!(!plain_number(v), "{v} should be quoted");
        }
        let argv =
            |rest: &str| -> Vec<String> { format!("vllm serve m {rest}").split(' ').map(str::to_owned).collect() };
        let d = Deploy::of(&argv("--max-num-seqs 010 --x true")).unwrap();
        let yaml: Vec<&str> = d.flags.iter().map(|f| f.yaml.as_str()).collect();
        assert_eq!(yaml, ["\"010\"", "\"true\""]);
        assert_eq!(Deploy::of(&argv("--config c.yaml --max-num-seqs 4")), None, "the file's flags are not in argv");
        assert_eq!(Deploy::of(&argv("--middleware a --middleware b")), None, "a YAML key holds one value");
    }
}
