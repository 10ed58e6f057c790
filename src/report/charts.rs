//! SVG charts (plotters, SVG backend only: no system fonts needed). Pure functions from findings to bytes.

use crate::stats::kv::{KvFindings, Regime};
use crate::stats::sweep::GroupSweep;
use plotters::prelude::*;

const W: u32 = 760;
const H: u32 = 420;

/// Labels only the powers of two of a log2 axis.
fn pow2_label(x: &f64) -> String {
    if (x - x.round()).abs() < 0.02 { format!("{:.0}", 2f64.powf(x.round())) } else { String::new() }
}

fn range(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    let (mut lo, mut hi) = (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(f64::MIN, f64::max));
    if v.is_empty() {
        return (0.0, 1.0);
    }
    if floor_zero {
        lo = lo.min(0.0);
    }
    // A range of one value (every cell at one concurrency, say) still needs a visible width: a tiny one makes
    // plotters' pixel arithmetic overflow.
    let pad = ((hi - lo) * 0.1).max(hi.abs().max(lo.abs()) * 0.02);
    let pad = if pad > 1e-6 { pad } else { 1.0 };
    if !floor_zero {
        lo -= pad;
    }
    hi += pad;
    (lo, hi)
}

/// A chart plotters could not draw. Charts render into memory, so this is never the disk: it is a chart
/// whose figures plotters cannot lay out, and a report with a half-drawn chart would look complete.
#[derive(Debug, thiserror::Error)]
#[error(
    "the chart could not be drawn ({0}); this is a bug in servelab's chart code, please report it with the run folder"
)]
pub struct ChartError(String);

/// Renders a chart into an SVG string.
fn svg<F>(draw: F) -> Result<String, ChartError>
where
    F: for<'a> FnOnce(
        &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error + 'a>>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        crate::record::failpoint::io("chart-draw").map_err(|e| ChartError(e.to_string()))?;
        draw(&root).map_err(|e| ChartError(e.to_string()))?;
        root.present().map_err(|e| ChartError(e.to_string()))?;
    }
    Ok(svg)
}

/// Memory (left axis) and KV tokens (right axis) against max-model-len, on a log2 length axis.
pub fn kv_scaling(f: &KvFindings, mem: &[(u64, f64)], tokens: &[(u64, u64)]) -> Result<String, ChartError> {
    svg(|root| draw_kv(root, f, mem, tokens))
}

fn draw_kv<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    f: &KvFindings,
    mem: &[(u64, f64)],
    tokens: &[(u64, u64)],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    root.fill(&WHITE)?;
    let xs: Vec<f64> =
        mem.iter().map(|(l, _)| (*l as f64).log2()).chain(tokens.iter().map(|(l, _)| (*l as f64).log2())).collect();
    let (x0, x1) = range(xs.iter().cloned(), false);
    let (y0, y1) = range(mem.iter().map(|(_, m)| *m), true);
    let (t0, t1) = range(tokens.iter().map(|(_, t)| *t as f64), true);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Memory and KV capacity against max-model-len ({})", regime_name(&f.regime)),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(90)
        .build_cartesian_2d(x0..x1, y0..y1)?
        .set_secondary_coord(x0..x1, t0..t1);
    chart
        .configure_mesh()
        // Bold lines only: the light grid doubled each SVG (examples/ must stay small) and added no reading.
        .max_light_lines(0)
        .x_desc("max-model-len (tokens, log scale)")
        .y_desc("memory (MiB)")
        .x_label_formatter(&pow2_label)
        .y_label_formatter(&|y| crate::stats::thousands(*y, 0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("KV cache tokens")
        .y_label_formatter(&|y| crate::stats::thousands(*y, 0))
        .draw()?;
    let mem_pts: Vec<(f64, f64)> = mem.iter().map(|(l, m)| ((*l as f64).log2(), *m)).collect();
    chart
        .draw_series(LineSeries::new(mem_pts.clone(), BLUE.stroke_width(2)))?
        .label("memory (MiB)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart.draw_series(mem_pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    let tok_pts: Vec<(f64, f64)> = tokens.iter().map(|(l, t)| ((*l as f64).log2(), *t as f64)).collect();
    chart
        .draw_secondary_series(LineSeries::new(tok_pts.clone(), RED.stroke_width(2)))?
        .label("KV tokens")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart.draw_secondary_series(tok_pts.iter().map(|p| TriangleMarker::new(*p, 5, RED.filled())))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// Tokens/s (left axis) and p95 e2e (right axis) against concurrency, the knee marked.
type Axis = plotters::coord::types::RangedCoordf64;
type TwoAxes<'a> =
    plotters::chart::DualCoordChartContext<'a, SVGBackend<'a>, Cartesian2d<Axis, Axis>, Cartesian2d<Axis, Axis>>;
/// A labelled series: its points, and each point's 95% interval as (x, low, high).
type Series<'s> = (&'s str, &'s [(f64, f64)], &'s [(f64, f64, f64)]);

/// The measured series of a two-axis chart: the left one in blue with circles, the right one in red with
/// triangles, each point with its interval as a bar (the right one's bars `dx` to the side, so that bars
/// at the same x stay apart).
fn draw_two_series<'a>(
    chart: &mut TwoAxes<'a>,
    (left_label, left, left_ci): Series<'_>,
    (right_label, right, right_ci): Series<'_>,
    dx: f64,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    chart
        .draw_series(LineSeries::new(left.to_vec(), BLUE.stroke_width(2)))?
        .label(left_label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart.draw_series(left.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    chart.draw_series(left_ci.iter().map(|b| PathElement::new(vec![(b.0, b.1), (b.0, b.2)], BLUE.stroke_width(1))))?;
    chart
        .draw_secondary_series(LineSeries::new(right.to_vec(), RED.stroke_width(2)))?
        .label(right_label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart.draw_secondary_series(right.iter().map(|p| TriangleMarker::new(*p, 5, RED.filled())))?;
    chart.draw_secondary_series(
        right_ci.iter().map(|b| PathElement::new(vec![(b.0 + dx, b.1), (b.0 + dx, b.2)], RED.stroke_width(1))),
    )?;
    Ok(())
}

pub fn sweep(g: &GroupSweep) -> Result<String, ChartError> {
    svg(|root| draw_sweep(root, g))
}

fn draw_sweep<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    g: &GroupSweep,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    root.fill(&WHITE)?;
    let pts: Vec<(f64, f64, f64)> = g
        .cells
        .iter()
        .map(|c| ((c.concurrency as f64).log2(), c.head().tok_s, c.head().e2e.map(|e| e.p95 * 1e3).unwrap_or(f64::NAN)))
        .collect();
    let (x0, x1) = range(pts.iter().map(|p| p.0), false);
    // Each point's 95% interval is drawn as a bar; the axes must hold the bars too.
    let tok_ci: Vec<(f64, f64, f64)> =
        g.cells.iter().filter_map(|c| c.tok_s_ci.map(|(lo, hi)| ((c.concurrency as f64).log2(), lo, hi))).collect();
    let p95_ci: Vec<(f64, f64, f64)> = g
        .cells
        .iter()
        .filter_map(|c| c.p95_ci.map(|(lo, hi)| ((c.concurrency as f64).log2(), lo * 1e3, hi * 1e3)))
        .collect();
    let (y0, y1) = range(pts.iter().map(|p| p.1).chain(tok_ci.iter().flat_map(|b| [b.1, b.2])), true);
    let (p0, p1) = range(pts.iter().map(|p| p.2).chain(p95_ci.iter().flat_map(|b| [b.1, b.2])), true);
    let mut chart = ChartBuilder::on(root)
        .caption("Throughput and p95 latency against concurrency", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?
        .set_secondary_coord(x0..x1, p0..p1);
    chart
        .configure_mesh()
        // Bold lines only: the light grid doubled each SVG (examples/ must stay small) and added no reading.
        .max_light_lines(0)
        .x_desc("concurrency (log scale)")
        .y_desc("tokens/s")
        .x_label_formatter(&pow2_label)
        .y_label_formatter(&|y| crate::stats::thousands(*y, 0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("p95 e2e (ms)")
        .y_label_formatter(&|y| crate::stats::thousands(*y, 1))
        .draw()?;
    let tok: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    let p95: Vec<(f64, f64)> = pts.iter().filter(|p| p.2.is_finite()).map(|p| (p.0, p.2)).collect();
    draw_two_series(&mut chart, ("tokens/s", &tok, &tok_ci), ("p95 e2e (ms)", &p95, &p95_ci), 0.04)?;
    if let Some(k) = g.knee.operating_point {
        let x = (k as f64).log2();
        chart
            .draw_series(LineSeries::new(vec![(x, y0), (x, y1)], GREEN.stroke_width(2)))?
            .label(format!("operating point (c={k})"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN.stroke_width(2)));
    }
    if let Some(k) = g.knee.throughput_knee {
        let x = (k as f64).log2();
        chart
            .draw_series(LineSeries::new(vec![(x, y0), (x, y1)], BLACK.stroke_width(1)))?
            .label(format!("throughput knee (c={k})"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    }
    if let Some(k) = g.knee.latency_knee {
        let x = (k as f64).log2();
        chart
            .draw_series(DashedLineSeries::new(vec![(x, y0), (x, y1)], 6, 4, MAGENTA.stroke_width(1)))?
            .label(format!("latency blows up (c={k})"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], MAGENTA));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Goodput and p95 e2e against the offered rate, each with its 95% interval, the sustainable rate marked.
pub fn rate_sweep(s: &crate::stats::rate::RateSweep) -> Result<String, ChartError> {
    svg(|root| draw_rate(root, s))
}

fn draw_rate<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    s: &crate::stats::rate::RateSweep,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    root.fill(&WHITE)?;
    let x = |c: &crate::stats::rate::RateCell| c.offered_rps;
    let good: Vec<(f64, f64)> = s.cells.iter().map(|c| (x(c), c.goodput_rps)).collect();
    let good_ci: Vec<(f64, f64, f64)> =
        s.cells.iter().filter_map(|c| c.goodput_ci.map(|(l, h)| (x(c), l, h))).collect();
    let p95: Vec<(f64, f64)> =
        s.cells.iter().filter(|c| c.p95_e2e_s.is_finite()).map(|c| (x(c), c.p95_e2e_s * 1e3)).collect();
    let p95_ci: Vec<(f64, f64, f64)> =
        s.cells.iter().filter_map(|c| c.p95_e2e_ci.map(|(l, h)| (x(c), l * 1e3, h * 1e3))).collect();
    let (x0, x1) = range(good.iter().map(|p| p.0).chain([0.0]), true);
    let (y0, y1) = range(good.iter().map(|p| p.1).chain(good_ci.iter().flat_map(|b| [b.1, b.2])).chain([0.0]), true);
    let (p0, p1) = range(p95.iter().map(|p| p.1).chain(p95_ci.iter().flat_map(|b| [b.1, b.2])), true);
    let mut chart = ChartBuilder::on(root)
        .caption("Goodput and p95 latency against the offered rate", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?
        .set_secondary_coord(x0..x1, p0..p1);
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc("offered rate (requests/s)")
        .y_desc("goodput (requests/s meeting the SLO)")
        .draw()?;
    chart.configure_secondary_axes().y_desc("p95 e2e (ms)").draw()?;
    draw_two_series(&mut chart, ("goodput", &good, &good_ci), ("p95 e2e (ms)", &p95, &p95_ci), 0.0)?;
    if let Some(r) = s.sustainable.rate()
        && let Some(c) = s.cells.iter().find(|c| c.rate == r)
    {
        let xr = x(c);
        chart
            .draw_series(LineSeries::new(vec![(xr, y0), (xr, y1)], GREEN.stroke_width(2)))?
            .label(format!("sustainable ({} req/s)", crate::stats::trimmed(r, 2)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// TTFT p50 against the shared-prefix length, one line per server, with the 95% intervals as bars.
pub fn prefix(rows: &[crate::stats::prefix::PrefixRow]) -> Result<String, ChartError> {
    svg(|root| draw_prefix(root, rows))
}

fn draw_prefix<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    rows: &[crate::stats::prefix::PrefixRow],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    root.fill(&WHITE)?;
    let x = |r: &crate::stats::prefix::PrefixRow| f64::from(r.shared_prefix_tokens);
    let ys = rows.iter().flat_map(|r| [Some(r.ttft_p50_s), r.ttft_ci.map(|c| c.0), r.ttft_ci.map(|c| c.1)]);
    let (x0, x1) = range(rows.iter().map(x).chain([0.0]), true);
    let (y0, y1) = range(ys.flatten().map(|y| y * 1e3).chain([0.0]), true);
    let mut chart = ChartBuilder::on(root)
        .caption("TTFT against the shared prefix", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart.configure_mesh().max_light_lines(0).x_desc("shared prefix (tokens)").y_desc("TTFT p50 (ms)").draw()?;
    let mut servers: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
    servers.dedup();
    for (i, s) in servers.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let mine: Vec<&crate::stats::prefix::PrefixRow> = rows.iter().filter(|r| r.server == *s).collect();
        chart
            .draw_series(LineSeries::new(mine.iter().map(|r| (x(r), r.ttft_p50_s * 1e3)), colour.stroke_width(2)))?
            .label(s.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(mine.iter().filter_map(|r| {
            let (lo, hi) = r.ttft_ci?;
            Some(PathElement::new(vec![(x(r), lo * 1e3), (x(r), hi * 1e3)], colour.stroke_width(1)))
        }))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Tokens/s per GPU against tokens/s per user, one point per configuration and level; the Pareto front
/// (points no other beats on both) drawn as a line.
pub fn pareto(points: &[crate::stats::tune::ParetoPoint]) -> Result<String, ChartError> {
    svg(|root| draw_pareto(root, points))
}

/// A Pareto point's legend: its flags, or vLLM's defaults (which carry none).
fn pareto_label(p: &crate::stats::tune::ParetoPoint) -> &str {
    if p.defaults { "vLLM defaults" } else { p.setting.as_str() }
}

fn draw_pareto<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    points: &[crate::stats::tune::ParetoPoint],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    root.fill(&WHITE)?;
    let (x0, x1) = range(points.iter().map(|p| p.per_user).chain([0.0]), true);
    let (y0, y1) = range(points.iter().map(|p| p.per_gpu).chain([0.0]), true);
    let mut chart = ChartBuilder::on(root)
        .caption("Tune: throughput per GPU against speed per user", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc("output tokens/s per user (1 / median TPOT)")
        .y_desc("output tokens/s per GPU")
        .draw()?;
    let mut settings: Vec<&str> = points.iter().map(pareto_label).collect();
    settings.dedup();
    for (i, s) in settings.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let mine = points.iter().filter(|p| pareto_label(p) == *s);
        chart
            .draw_series(mine.map(|p| Circle::new((p.per_user, p.per_gpu), 4, colour.filled())))?
            .label(s.to_string())
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, colour.filled()));
    }
    let mut front: Vec<(f64, f64)> = points.iter().filter(|p| p.on_front).map(|p| (p.per_user, p.per_gpu)).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart.draw_series(LineSeries::new(front, BLACK.stroke_width(1)))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// The regime's name in the chart's caption.
fn regime_name(r: &Regime) -> &'static str {
    match r {
        Regime::Flat { .. } => "flat",
        Regime::Linear { .. } => "linear",
        Regime::Irregular { .. } => "irregular",
        Regime::Insufficient => "insufficient",
    }
}
