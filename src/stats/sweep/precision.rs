//! The precision loop's questions: whether a cell needs another repeat, and which cells are wider than the
//! target.

use super::*;

/// Whether a cell should get another repeat under `precision`: its tokens/s interval is wider than the target
/// (or it has no interval yet), or — with a latency budget — its p95 e2e interval straddles the budget, so the
/// operating point decided from it is still open. Repeats go where a decision is close, up to `max_repeats`.
pub fn needs_repeat(cell: &Cell, rel_ci: f64, p95_budget_s: Option<f64>) -> bool {
    if cell.tok_s_rel_halfwidth().is_none_or(|h| h > rel_ci) {
        return true;
    }
    let p95 = cell.head().e2e.map(|e| e.p95);
    matches!((p95, p95_budget_s), (Some(p95), Some(budget)) if side(p95, cell.p95_ci, budget) == Side::Straddles)
}

/// Notes the cells whose tokens/s interval is wider than the precision target (a note, not a failure);
/// returns their levels per group.
pub fn note_precision(groups: &mut [GroupSweep], rel_ci: f64) -> Vec<Vec<u32>> {
    let mut missed = Vec::new();
    for g in groups {
        let mut levels = Vec::new();
        for c in &mut g.cells {
            if let Some(h) = c.tok_s_rel_halfwidth().filter(|h| *h > rel_ci) {
                c.notes.push(CellNote::PrecisionMissed {
                    halfwidth_pct: h * 100.0,
                    repeats: c.repeats.len(),
                    target_pct: rel_ci * 100.0,
                });
                levels.push(c.concurrency);
            }
        }
        missed.push(levels);
    }
    missed
}
