//! Hand-written SVG charts, drawn the way the `mlp` demo draws its plot (and with its
//! value axes): panels side by side, each with lines, shaded bands and markers, and
//! one legend below. (Writing into a `String` cannot fail, hence `let _ = writeln!`.)

use std::fmt::Write;

use crate::mlp_plot::{escape, Axis};

const PANEL_WIDTH: f64 = 290.0;
const PANEL_HEIGHT: f64 = 250.0;
const PANEL_TOP: f64 = 88.0;
const PANEL_GAP: f64 = 80.0;
/// From the top of one row of panels to the top of the next.
const ROW_STEP: f64 = PANEL_HEIGHT + 110.0;
const MARGIN_LEFT: f64 = 70.0;
/// Below the last row: its axis labels and the legend.
const BOTTOM: f64 = 102.0;

/// Something drawn in a panel, in data coordinates.
pub enum Mark {
    /// A polyline; a non-finite y breaks it.
    Line {
        points: Vec<(f64, f64)>,
        color: &'static str,
        dashed: bool,
    },
    /// The area between `lo` and `hi` at each x, shaded; non-finite values break it.
    Band {
        points: Vec<(f64, f64, f64)>,
        color: &'static str,
    },
    /// A × at each point (a diverged run).
    Crosses {
        points: Vec<(f64, f64)>,
        color: &'static str,
    },
    /// A dot at each point.
    Dots {
        points: Vec<(f64, f64)>,
        color: &'static str,
    },
}

/// One panel.
pub struct Chart {
    pub title: String,
    /// The smaller second line under the title.
    pub detail: String,
    pub x: Axis,
    pub x_label: String,
    pub y: Axis,
    pub marks: Vec<Mark>,
    /// A dotted grey horizontal line at this value, with its label.
    pub reference: Option<(f64, String)>,
}

/// A legend entry.
pub struct Key {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
}

/// The charts under `title`, `columns` to a row, the legend below them.
pub fn svg(title: &str, charts: &[Chart], columns: usize, keys: &[Key]) -> String {
    let columns = columns.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(columns).max(1);
    let n = columns as f64;
    let width = 2.0 * MARGIN_LEFT + n * PANEL_WIDTH + (n - 1.0) * PANEL_GAP;
    let height = PANEL_TOP + (rows - 1) as f64 * ROW_STEP + PANEL_HEIGHT + BOTTOM;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        let frame = Frame {
            left: MARGIN_LEFT + (i % columns) as f64 * (PANEL_WIDTH + PANEL_GAP),
            top: PANEL_TOP + (i / columns) as f64 * ROW_STEP,
        };
        frame.draw(&mut out, chart);
    }
    draw_legend(&mut out, keys, width, height - 24.0);
    out.push_str("</svg>\n");
    out
}

/// Where a panel's plotting area sits.
struct Frame {
    left: f64,
    top: f64,
}

impl Frame {
    fn px(&self, axis: &Axis, v: f64) -> f64 {
        self.left + axis.fraction(v) * PANEL_WIDTH
    }

    fn py(&self, axis: &Axis, v: f64) -> f64 {
        self.top + (1.0 - axis.fraction(v)) * PANEL_HEIGHT
    }

    fn draw(&self, out: &mut String, chart: &Chart) {
        self.draw_axes(out, chart);
        if let Some((value, label)) = &chart.reference {
            let (l, r, py) = (
                self.left,
                self.left + PANEL_WIDTH,
                self.py(&chart.y, *value),
            );
            let _ = writeln!(
                out,
                r##"<line x1="{l}" y1="{py:.1}" x2="{r}" y2="{py:.1}" stroke="#888" stroke-width="1.5" stroke-dasharray="2 3"/>"##
            );
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#666">{}</text>"##,
                r - 4.0,
                py - 6.0,
                escape(label)
            );
        }
        // Bands first, so that lines and markers stay on top of them.
        for mark in &chart.marks {
            if let Mark::Band { points, color } = mark {
                self.draw_band(out, chart, points, color);
            }
        }
        for mark in &chart.marks {
            match mark {
                Mark::Band { .. } => {}
                Mark::Line {
                    points,
                    color,
                    dashed,
                } => self.draw_line(out, chart, points, color, *dashed),
                Mark::Crosses { points, color } => {
                    for &(x, y) in points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                    {
                        let (px, py) = (self.px(&chart.x, x), self.py(&chart.y, y));
                        let _ = writeln!(
                            out,
                            r#"<path d="M{:.1},{:.1}l10,10m0,-10l-10,10" stroke="{color}" stroke-width="2.5"/>"#,
                            px - 5.0,
                            py - 5.0
                        );
                    }
                }
                Mark::Dots { points, color } => {
                    for &(x, y) in points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                    {
                        let _ = writeln!(
                            out,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                            self.px(&chart.x, x),
                            self.py(&chart.y, y)
                        );
                    }
                }
            }
        }
    }

    fn draw_axes(&self, out: &mut String, chart: &Chart) {
        let (x, y) = (&chart.x, &chart.y);
        let (l, t, r, b) = (
            self.left,
            self.top,
            self.left + PANEL_WIDTH,
            self.top + PANEL_HEIGHT,
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            (l + r) / 2.0,
            t - 28.0,
            escape(&chart.title)
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            (l + r) / 2.0,
            t - 10.0,
            escape(&chart.detail)
        );
        for v in &y.minor {
            let py = self.py(y, *v);
            let _ = writeln!(
                out,
                r##"<line x1="{l}" y1="{py:.1}" x2="{r}" y2="{py:.1}" stroke="#f0f0f0"/>"##
            );
        }
        for (v, label) in &y.ticks {
            let py = self.py(y, *v);
            let _ = writeln!(
                out,
                r##"<line x1="{l}" y1="{py:.1}" x2="{r}" y2="{py:.1}" stroke="#dcdcdc"/>"##
            );
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}" text-anchor="end" dominant-baseline="middle">{label}</text>"#,
                l - 6.0,
                py
            );
        }
        for v in &x.minor {
            let px = self.px(x, *v);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{t}" x2="{px:.1}" y2="{b}" stroke="#f0f0f0"/>"##
            );
        }
        for (v, label) in &x.ticks {
            let px = self.px(x, *v);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{b}" x2="{px:.1}" y2="{}" stroke="#444"/>"##,
                b + 5.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"#,
                b + 20.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (l + r) / 2.0,
            b + 40.0,
            escape(&chart.x_label)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{l}" y="{t}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
        );
    }

    fn draw_line(
        &self,
        out: &mut String,
        chart: &Chart,
        points: &[(f64, f64)],
        color: &str,
        dashed: bool,
    ) {
        let dash = if dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let mut path = String::new();
        let mut flush = |path: &mut String| {
            if !path.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"{dash}/>"#
                );
                path.clear();
            }
        };
        for &(x, y) in points {
            if !(x.is_finite() && y.is_finite()) {
                flush(&mut path);
                continue;
            }
            let _ = write!(
                path,
                "{:.1},{:.1} ",
                self.px(&chart.x, x),
                self.py(&chart.y, y)
            );
        }
        flush(&mut path);
    }

    /// One polygon per run of finite points: along `hi` forwards, back along `lo`.
    fn draw_band(&self, out: &mut String, chart: &Chart, points: &[(f64, f64, f64)], color: &str) {
        let finite = |p: &&(f64, f64, f64)| p.0.is_finite() && p.1.is_finite() && p.2.is_finite();
        let mut run: Vec<(f64, f64, f64)> = Vec::new();
        let mut flush = |run: &mut Vec<(f64, f64, f64)>| {
            if run.len() > 1 {
                let mut path = String::new();
                for &(x, _, hi) in run.iter() {
                    let _ = write!(
                        path,
                        "{:.1},{:.1} ",
                        self.px(&chart.x, x),
                        self.py(&chart.y, hi)
                    );
                }
                for &(x, lo, _) in run.iter().rev() {
                    let _ = write!(
                        path,
                        "{:.1},{:.1} ",
                        self.px(&chart.x, x),
                        self.py(&chart.y, lo)
                    );
                }
                let _ = writeln!(
                    out,
                    r#"<polygon points="{path}" fill="{color}" fill-opacity="0.3" stroke="none"/>"#
                );
            }
            run.clear();
        };
        for p in points {
            if finite(&p) {
                run.push(*p);
            } else {
                flush(&mut run);
            }
        }
        flush(&mut run);
    }
}

fn draw_legend(out: &mut String, keys: &[Key], width: f64, y: f64) {
    const ENTRY: f64 = 230.0;
    let mut x = (width - ENTRY * keys.len() as f64) / 2.0;
    for key in keys {
        let dash = if key.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{dash}/>"#,
            x + 36.0,
            key.color
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y}" dominant-baseline="middle">{}</text>"#,
            x + 44.0,
            escape(&key.label)
        );
        x += ENTRY;
    }
}

/// An x axis over `0..=max` (steps or epochs) with about six round ticks.
pub fn count_axis(max: f64) -> Axis {
    let step = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
    ]
    .into_iter()
    .find(|step| max <= 6.0 * step)
    .unwrap_or(5000.0);
    let ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= max)
        .collect();
    Axis::linear(0.0, max.max(1.0), &ticks)
}

/// A linear axis over `lo..=hi` padded to round ticks.
pub fn value_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    };
    let raw = (hi - lo) / 5.0;
    let decade = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * decade);
    let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
    let ticks: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
    let mut axis = Axis::linear(first as f64 * step, last as f64 * step, &ticks);
    // Axis::linear labels with `{}`: round away the binary noise of k·step.
    for (v, label) in &mut axis.ticks {
        *label = crate::mlp_plot::trim(*v);
    }
    axis
}
