//! `tune.csv`: one row per configuration of a tune (searched, vLLM's defaults, pruned), a pure function of
//! `stats::tune`; `screen_value` is screening's short phase on the search start (empty without one).

use crate::stats::tune::{Measured, TuneReport};

pub const COLUMNS: [&str; 18] = [
    "rank",
    "setting",
    "group",
    "status",
    "search_start",
    "search_value",
    "search_ci_low",
    "search_ci_high",
    "search_level",
    "search_p95_e2e_s",
    "screen_value",
    "confirm_value",
    "confirm_ci_low",
    "confirm_ci_high",
    "confirm_level",
    "confirm_p95_e2e_s",
    "note",
    "command",
];

fn cells(m: &Option<Measured>) -> [String; 5] {
    let f = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_default();
    match m {
        Some(m) => [
            f(Some(m.value)),
            f(m.ci.map(|c| c.0)),
            f(m.ci.map(|c| c.1)),
            m.level.clone(),
            f(m.p95_e2e_s.filter(|p| p.is_finite())),
        ],
        None => Default::default(),
    }
}

/// A template error as the CSV writer's error (the CSV words its notes with the reports' macros).
fn template_error(e: minijinja::Error) -> csv::Error {
    csv::Error::from(std::io::Error::other(e))
}

pub fn render(t: &TuneReport) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    // A row's note in the templates' words (`findings.md`), so the CSV says what tune.md says; compiled once.
    let env = super::markdown::environment(None);
    let note = env.template_from_str("{% import \"findings.md\" as f %}{{ f.row_note(n) }}").map_err(template_error)?;
    for (i, r) in t.rows.iter().enumerate() {
        let rank = if r.search.is_some() { (i + 1).to_string() } else { String::new() };
        let mut row = vec![
            rank,
            if r.defaults { "vLLM defaults".to_owned() } else { r.setting.clone() },
            r.group.clone(),
            r.status.clone(),
            r.searched.map(|n| n.to_string()).unwrap_or_default(),
        ];
        row.extend(cells(&r.search));
        row.push(r.screen.as_ref().map(|m| format!("{:.4}", m.value)).unwrap_or_default());
        row.extend(cells(&r.confirm));
        row.push(note.render(minijinja::context! { n => &r.note }).map_err(template_error)?);
        row.push(r.command.clone());
        w.write_record(row)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
