//! The rate sweep's findings checked again against its cells by a second, plainer path.

use super::*;

/// Two figures agree when they differ by rounding alone.
pub(super) fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The judgement of a cell from its figures as written, by plain comparisons: every repeat's in-flight thirds,
/// the late share against the limit, the interval's bounds against the target.
pub fn plain_judgement(c: &RateCell, target: Option<f64>) -> Judgement {
    let repeats = c.repeats.len();
    let rose = c
        .repeats
        .iter()
        .filter(|r| matches!((r.in_flight_first, r.in_flight_last), (Some(f), Some(l)) if l > 1.5 * f + 2.0))
        .count();
    if rose > 0 && rose == repeats {
        Judgement::Rising { repeats }
    } else if rose > 0 {
        Judgement::RisingSome { rising: rose, repeats }
    } else if c.late_share > LATE_SHARE_MAX {
        Judgement::Undelivered { late_share: c.late_share }
    } else if let Some(t) = target {
        let a = Attainment { share: c.met as f64 / c.requests.max(1) as f64, ci: c.attainment_ci, target: t };
        if a.ci.1 < t {
            Judgement::Below(a)
        } else if a.ci.0 < t {
            Judgement::Straddles(a)
        } else {
            Judgement::Sustains(a)
        }
    } else {
        Judgement::Steady
    }
}

/// Two judgements agree when they differ in their figures by rounding alone.
pub fn same_judgement(a: &Judgement, b: &Judgement) -> bool {
    let att = |x: &Attainment, y: &Attainment| {
        same(x.share, y.share) && same(x.ci.0, y.ci.0) && same(x.ci.1, y.ci.1) && same(x.target, y.target)
    };
    match (a, b) {
        (Judgement::Undelivered { late_share: x }, Judgement::Undelivered { late_share: y }) => same(*x, *y),
        (Judgement::Below(x), Judgement::Below(y))
        | (Judgement::Straddles(x), Judgement::Straddles(y))
        | (Judgement::Sustains(x), Judgement::Sustains(y)) => att(x, y),
        (x, y) => x == y,
    }
}

impl RateCell {
    /// The cell's own figures against each other: counts summed over the repeats, goodput within the achieved
    /// rate, the interval around the pooled Clopper–Pearson one, the flags and notes from their figures.
    pub fn holds(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let at = crate::stats::trimmed(self.rate, 3);
        let requests: usize = self.repeats.iter().map(|r| r.requests).sum();
        let met: usize = self.repeats.iter().map(|r| r.met).sum();
        if requests != self.requests || met != self.met {
            bad.push(format!(
                "{at} req/s: {} of {} met written; its repeats sum to {met} of {requests}",
                self.met, self.requests
            ));
        }
        if !same(self.attainment, met as f64 / requests.max(1) as f64) {
            bad.push(format!("{at} req/s: attainment {} is not {met}/{requests}", self.attainment));
        }
        for (i, r) in self.repeats.iter().enumerate() {
            let share = r.met as f64 / r.requests.max(1) as f64;
            if r.goodput_rps > r.achieved_rps * (1.0 + 1e-9) || !same(r.goodput_rps, r.achieved_rps * share) {
                bad.push(format!(
                    "{at} req/s repeat {i}: goodput {} is not the achieved {} times the {met}/{requests} that met the SLO",
                    r.goodput_rps,
                    r.achieved_rps,
                    met = r.met,
                    requests = r.requests
                ));
            }
        }
        let n = self.repeats.len().max(1) as f64;
        let mean_of = |f: fn(&RateRepeat) -> f64| self.repeats.iter().map(f).sum::<f64>() / n;
        if !same(self.goodput_rps, mean_of(|r| r.goodput_rps)) || !same(self.achieved_rps, mean_of(|r| r.achieved_rps))
        {
            bad.push(format!("{at} req/s: goodput or achieved rate is not the mean of its repeats"));
        }
        if self.goodput_rps > self.achieved_rps * (1.0 + 1e-9) {
            bad.push(format!(
                "{at} req/s: goodput {} exceeds the achieved rate {}",
                self.goodput_rps, self.achieved_rps
            ));
        }
        let (lo, hi) = clopper_pearson(met, requests);
        let (a, b) = self.attainment_ci;
        let eps = 1e-9;
        if !(0.0 <= a && a <= lo + eps && hi - eps <= b && b <= 1.0) {
            bad.push(format!("{at} req/s: attainment interval {a}–{b} does not hold the pooled {lo}–{hi}"));
        }
        if self.repeats.len() < 2 && !(same(a, lo) && same(b, hi)) {
            bad.push(format!("{at} req/s: one repeat, yet the interval {a}–{b} is not Clopper–Pearson {lo}–{hi}"));
        }
        let rose = self
            .repeats
            .iter()
            .filter(|r| matches!((r.in_flight_first, r.in_flight_last), (Some(f), Some(l)) if l > 1.5 * f + 2.0))
            .count();
        if rose != self.rising_repeats
            || self.rising != (rose > 0)
            || self.delivered != (self.late_share <= LATE_SHARE_MAX)
        {
            bad.push(format!("{at} req/s: rising or delivered does not follow from the repeats and the late share"));
        }
        let mut notes = Vec::new();
        if self.late_share > LATE_SHARE_MAX {
            notes.push(Note::Undelivered { late_share: self.late_share, late_p99_s: self.lateness_p99_s });
        }
        if rose > 0 {
            notes.push(Note::Rising { rising: rose, repeats: self.repeats.len() });
        }
        if notes != self.notes {
            bad.push(format!("{at} req/s: notes {:?}, the figures give {notes:?}", self.notes));
        }
        bad
    }
}

impl RateSweep {
    /// Checks every finding against the cells as written by a second, plainer path: each cell's figures
    /// against each other ([`RateCell::holds`]), each cell's judgement recomputed by plain comparisons, the
    /// sustainable rate as the last before the first cell that does not sustain, the rules as the spec has them.
    pub fn holds(&self, slo: Option<&Slo>) -> Vec<String> {
        let mut bad = Vec::new();
        if self.slo != slo.map(SloRule::of) || self.target != slo.map(|s| s.attainment) {
            bad.push(format!("the SLO written ({:?}, target {:?}) is not the spec's", self.slo, self.target));
        }
        if self.cells.windows(2).any(|w| w[0].rate >= w[1].rate) {
            bad.push("the cells are not in rising rate order".to_owned());
        }
        for c in &self.cells {
            bad.extend(c.holds());
        }
        let first = self.cells.iter().enumerate().find_map(|(i, c)| {
            let j = plain_judgement(c, self.target);
            (!matches!(j, Judgement::Sustains(_) | Judgement::Steady)).then_some((i, j))
        });
        let fine = match (&self.sustainable, first.clone()) {
            (Sustainable::NoCells, None) => self.cells.is_empty(),
            (Sustainable::AboveAll { rate }, None) => self.cells.last().is_some_and(|c| c.rate == *rate),
            (Sustainable::NoneSustains { lowest, why }, Some((0, j))) => {
                self.cells[0].rate == *lowest && same_judgement(why, &j)
            }
            (Sustainable::Limit { rate, next, why }, Some((i, j))) if i > 0 => {
                self.cells[i - 1].rate == *rate && self.cells[i].rate == *next && same_judgement(why, &j)
            }
            _ => false,
        };
        if !fine {
            bad.push(format!(
                "sustainable: {:?}, but the first rate that does not sustain is {:?}",
                self.sustainable,
                first.map(|(i, j)| (self.cells[i].rate, j))
            ));
        }
        let one: Vec<f64> = if self.target.is_some() {
            self.cells.iter().filter(|c| c.repeats.len() < 2).map(|c| c.rate).collect()
        } else {
            Vec::new()
        };
        if one != self.one_phase {
            bad.push(format!("measured in one phase: {:?} written, the cells give {one:?}", self.one_phase));
        }
        bad
    }
}
