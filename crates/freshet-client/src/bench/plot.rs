//! SVG charts written by hand: polylines with axes, ticks, labels and a legend. No
//! dependencies; the files open in any browser.
//!
//! - [`latency_by_percentile`]: latency against percentile on the usual "nines" axis
//!   (x = -log10(1 - q): 0%, 90%, 99%, 99.9%, ...), one line per histogram.
//! - [`throughput_over_time`]: produce and consume MB/s per second of the run. The two lines
//!   usually coincide, so produce is drawn dashed on top of a wider, paler consume line: both
//!   stay visible.
//! - [`line_chart`]: the general chart both use (and the sweep's p99-by-rate chart).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::run::Sample;

const WIDTH: f64 = 920.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points (x, y), in x order.
    pub points: Vec<(f64, f64)>,
    /// How the line is drawn.
    pub style: LineStyle,
}

/// How a [`Series`] is drawn. Series are drawn last to first, so the first one listed is on
/// top where lines coincide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum LineStyle {
    /// A solid line, 2 px.
    #[default]
    Solid,
    /// A dashed line, 2 px: shows over a line it coincides with.
    Dashed,
    /// A wide (5 px), half-transparent line: stays visible under a line drawn on top.
    Wide,
}

impl LineStyle {
    /// SVG stroke attributes.
    fn attributes(self) -> &'static str {
        match self {
            LineStyle::Solid => r#"stroke-width="2""#,
            LineStyle::Dashed => r#"stroke-width="2" stroke-dasharray="8 5""#,
            LineStyle::Wide => r#"stroke-width="5" stroke-opacity="0.45""#,
        }
    }
}

/// What a chart shows besides its series.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// X ticks (value, label); empty: chosen automatically.
    pub x_ticks: Vec<(f64, String)>,
    /// A dashed horizontal line (y, label), e.g. a latency objective.
    pub threshold: Option<(f64, String)>,
}

/// Rounds `max / 5` to 1, 2 or 5 times a power of ten.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{}k", v / 1e3)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart of `series` (x from 0 or the smallest x, y from 0).
pub fn line_chart(chart: &Chart<'_>, series: &[Series]) -> String {
    let p = Plot::new(chart, series);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + p.plot_w / 2.0,
        escape(chart.title)
    );
    grid(&mut svg, chart, &p);
    axes(&mut svg, chart, &p);
    lines(&mut svg, series, &p);
    svg.push_str("</svg>\n");
    svg
}

/// The y grid with its ticks, and the x ticks.
fn grid(svg: &mut String, chart: &Chart<'_>, p: &Plot) {
    // Y grid and ticks.
    let mut y = 0.0;
    while y <= p.y_top + p.y_step / 2.0 {
        let py = p.sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + p.plot_w,
            LEFT - 6.0,
            py + 4.0,
            fmt_tick(y)
        );
        y += p.y_step;
    }
    // X ticks.
    let x_ticks: Vec<(f64, String)> = if chart.x_ticks.is_empty() {
        let step = tick_step(p.x_max - p.x_min);
        let mut ticks = Vec::new();
        let mut x = (p.x_min / step).ceil() * step;
        while x <= p.x_max + step / 1000.0 {
            ticks.push((x, fmt_tick(x)));
            x += step;
        }
        ticks
    } else {
        chart.x_ticks.clone()
    };
    for (x, label) in &x_ticks {
        let px = p.sx(*x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + p.plot_h,
            TOP + p.plot_h + 18.0,
            escape(label)
        );
    }
}

/// The axes, their labels and the threshold line.
fn axes(svg: &mut String, chart: &Chart<'_>, p: &Plot) {
    // Axes and labels.
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="black"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        TOP + p.plot_h,
        TOP + p.plot_h,
        LEFT + p.plot_w,
        TOP + p.plot_h
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + p.plot_w / 2.0,
        HEIGHT - 15.0,
        escape(chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + p.plot_h / 2.0,
        escape(chart.y_label)
    );
    if let Some((y, label)) = &chart.threshold {
        let py = p.sy(*y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            LEFT + p.plot_w,
            LEFT + 6.0,
            py - 5.0,
            escape(label)
        );
    }
}

/// The series, last to first so that the first is on top, then the legend in order.
fn lines(svg: &mut String, series: &[Series], p: &Plot) {
    for (i, s) in series.iter().enumerate().rev() {
        let color = COLORS[i % COLORS.len()];
        let style = s.style.attributes();
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", p.sx(x), p.sy(y)))
            .collect();
        if pts.len() == 1 {
            let _ = writeln!(
                svg,
                r#"<circle cx="{}" r="3" fill="{color}"/>"#,
                pts[0].replacen(',', "\" cy=\"", 1)
            );
        } else if !pts.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" {style} points="{}"/>"#,
                pts.join(" ")
            );
        }
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = s.style.attributes();
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + p.plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" {style}/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
}

/// Where a chart's values land: the ranges of x and y and the plot area's size.
struct Plot {
    x_min: f64,
    x_max: f64,
    y_top: f64,
    y_step: f64,
    plot_w: f64,
    plot_h: f64,
}

impl Plot {
    /// The ranges that hold every finite point, the threshold and the x ticks.
    fn new(chart: &Chart<'_>, series: &[Series]) -> Plot {
        let points = series.iter().flat_map(|s| s.points.iter());
        let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in points {
            if x.is_finite() && y.is_finite() {
                x_min = x_min.min(x);
                x_max = x_max.max(x);
                y_max = y_max.max(y);
            }
        }
        if let Some((y, _)) = chart.threshold {
            y_max = y_max.max(y * 1.1);
        }
        for (x, _) in &chart.x_ticks {
            x_min = x_min.min(*x);
            x_max = x_max.max(*x);
        }
        if !x_min.is_finite() {
            (x_min, x_max) = (0.0, 1.0);
        }
        if x_min > 0.0 && chart.x_ticks.is_empty() {
            x_min = 0.0;
        }
        if x_max <= x_min {
            x_max = x_min + 1.0;
        }
        let y_step = tick_step(y_max);
        let y_top = ((y_max / y_step).ceil() * y_step).max(y_step);
        Plot {
            x_min,
            x_max,
            y_top,
            y_step,
            plot_w: WIDTH - LEFT - RIGHT,
            plot_h: HEIGHT - TOP - BOTTOM,
        }
    }

    fn sx(&self, x: f64) -> f64 {
        LEFT + (x - self.x_min) / (self.x_max - self.x_min) * self.plot_w
    }

    fn sy(&self, y: f64) -> f64 {
        TOP + self.plot_h - (y / self.y_top).clamp(0.0, 1.05) * self.plot_h
    }
}

/// Latency (ms) by percentile for each named histogram (µs samples).
pub fn latency_by_percentile(title: &str, histograms: &[(&str, &Histogram<u64>)]) -> String {
    let count = histograms.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
    // Up to the percentile the sample count resolves (at most 99.999%).
    let nines = ((count.max(10) as f64).log10()).clamp(1.0, 5.0);
    let series: Vec<Series> = histograms
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let mut points = Vec::new();
            let mut x = 0.0;
            while x <= nines + 1e-9 {
                let q = 1.0 - 10f64.powf(-x);
                points.push((x, h.value_at_quantile(q) as f64 / 1000.0));
                x += 0.05;
            }
            Series {
                name: format!("{name} (max {:.2} ms)", h.max() as f64 / 1000.0),
                points,
                style: LineStyle::Solid,
            }
        })
        .collect();
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    let x_ticks = (0..=nines.floor() as usize)
        .map(|i| (i as f64, labels[i].to_string()))
        .collect();
    line_chart(
        &Chart {
            title,
            x_label: "percentile",
            y_label: "latency (ms)",
            x_ticks,
            threshold: None,
        },
        &series,
    )
}

/// Produce and consume throughput (MB/s) over the run. Consumers keep up, so the two lines
/// usually coincide: produce is dashed and on top, consume wide and pale underneath.
pub fn throughput_over_time(timeline: &[Sample]) -> String {
    let series = vec![
        Series {
            name: "produce (acked)".into(),
            points: timeline
                .iter()
                .map(|s| (s.t_s, s.produce_mb_per_s))
                .collect(),
            style: LineStyle::Dashed,
        },
        Series {
            name: "consume".into(),
            points: timeline
                .iter()
                .map(|s| (s.t_s, s.consume_mb_per_s))
                .collect(),
            style: LineStyle::Wide,
        },
    ];
    line_chart(
        &Chart {
            title: "Throughput over time",
            x_label: "seconds since start",
            y_label: "MB/s",
            x_ticks: Vec::new(),
            threshold: None,
        },
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let mut h = super::super::latency::new_histogram();
        for us in 1..=10_000 {
            h.record(us).expect("in range");
        }
        let svg = latency_by_percentile("t <&>", &[("publish", &h)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("99.99%") && svg.contains("polyline"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Empty inputs still give a chart.
        let empty = throughput_over_time(&[]);
        assert!(empty.contains("</svg>") && !empty.contains("NaN"));
    }

    /// Issue 12 item 24: with consumers keeping up, produce and consume coincide; the produce
    /// line must stay visible (dashed, drawn after consume) rather than hidden under it.
    #[test]
    fn produce_line_is_visible_over_an_identical_consume_line() {
        let timeline: Vec<Sample> = (1..=5)
            .map(|t| Sample {
                t_s: t as f64,
                produce_msg_per_s: 1000.0,
                produce_mb_per_s: 1.0,
                consume_msg_per_s: 1000.0,
                consume_mb_per_s: 1.0,
                publish_p99_ms: 1.0,
                e2e_p99_ms: 1.0,
            })
            .collect();
        let svg = throughput_over_time(&timeline);
        let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 2, "{svg}");
        // Later elements paint over earlier ones: produce (the first colour) must come last.
        let (under, over) = (lines[0], lines[1]);
        assert!(
            over.contains(COLORS[0]),
            "produce is not drawn on top:\n{svg}"
        );
        assert!(under.contains(COLORS[1]), "{svg}");
        assert!(
            over.contains("stroke-dasharray"),
            "produce is not dashed:\n{svg}"
        );
        assert!(
            under.contains(r#"stroke-width="5""#),
            "consume is not wide:\n{svg}"
        );
        // The legend shows the same styles, in the series' order.
        let legend = svg.find("produce (acked)").expect("legend");
        assert!(svg[..legend].rfind("stroke-dasharray").is_some(), "{svg}");
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(1234.0), 500.0);
        assert_eq!(tick_step(0.0), 1.0);
    }
}
