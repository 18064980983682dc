//! A small hand-written SVG: three panels (training loss, test accuracy, saturated
//! tanh units) over epochs, one line per run, and a legend. No plotting crate: the
//! whole picture is a few dozen SVG elements. (Writing into a `String` cannot fail,
//! hence the `let _ = writeln!(…)`.)

use std::fmt::Write;

/// One run's curves, one value per epoch, and how to draw them.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
    pub loss: Vec<f64>,
    pub test_acc: Vec<f64>,
    /// Fraction of saturated units, mean over the hidden layers.
    pub saturated: Vec<f64>,
}

const WIDTH: f64 = 1120.0;
const HEIGHT: f64 = 440.0;
const PANEL_WIDTH: f64 = 290.0;
const PANEL_HEIGHT: f64 = 250.0;
const PANEL_TOP: f64 = 88.0;
const PANEL_LEFT: [f64; 3] = [70.0, 440.0, 810.0];

/// One panel: a title and a second line, the value axis, one curve per series, and
/// optionally a labelled horizontal reference line.
struct Panel<'a> {
    title: [&'a str; 2],
    y: Axis,
    curves: Vec<&'a [f64]>,
    reference: Option<(f64, &'a str)>,
}

/// The picture as SVG text; `title` goes on top, `chance` is the accuracy of a
/// guess (1/classes), drawn as a reference line.
pub fn svg(title: &str, series: &[Series], epochs: usize, chance: f64) -> String {
    let x = Axis::linear(0.0, epochs as f64, &epoch_ticks(epochs));
    let panels = [
        Panel {
            title: ["training loss", "cross-entropy, log scale"],
            y: Axis::log(series.iter().flat_map(|s| s.loss.iter().copied())),
            curves: series.iter().map(|s| &s.loss[..]).collect(),
            reference: None,
        },
        Panel {
            title: ["test accuracy", "BN with its running statistics"],
            y: Axis::percent(1.0, 0.2),
            curves: series.iter().map(|s| &s.test_acc[..]).collect(),
            reference: Some((chance, "chance")),
        },
        Panel {
            title: [
                "saturated tanh units",
                "|tanh| > 0.99, mean of the hidden layers",
            ],
            y: saturation_axis(series),
            curves: series.iter().map(|s| &s.saturated[..]).collect(),
            reference: None,
        },
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (panel, left) in panels.iter().zip(PANEL_LEFT) {
        let frame = Frame {
            left,
            top: PANEL_TOP,
        };
        frame.draw_axes(&mut out, panel.title, &x, &panel.y);
        if let Some((value, label)) = panel.reference {
            frame.draw_reference(&mut out, value, label, &panel.y);
        }
        for (s, values) in series.iter().zip(&panel.curves) {
            frame.draw_line(&mut out, s, values, &x, &panel.y);
        }
    }
    draw_legend(&mut out, series);
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

    /// Frame, title (name and a smaller second line), grid, ticks and labels.
    fn draw_axes(&self, out: &mut String, [name, detail]: [&str; 2], x: &Axis, y: &Axis) {
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
            escape(name)
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            (l + r) / 2.0,
            t - 10.0,
            escape(detail)
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
            r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#,
            (l + r) / 2.0,
            b + 40.0
        );
        let _ = writeln!(
            out,
            r##"<rect x="{l}" y="{t}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
        );
    }

    /// A dotted grey horizontal line at `value`, labelled at its right end.
    fn draw_reference(&self, out: &mut String, value: f64, label: &str, y: &Axis) {
        let (l, r, py) = (self.left, self.left + PANEL_WIDTH, self.py(y, value));
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

    /// A polyline through (epoch, value) for epochs 1, 2, …; non-finite values
    /// (a diverged run) break the line, values outside the axis are clamped to it.
    fn draw_line(&self, out: &mut String, s: &Series, values: &[f64], x: &Axis, y: &Axis) {
        let dash = if s.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let mut points = String::new();
        let mut flush = |points: &mut String| {
            if !points.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline points="{points}" fill="none" stroke="{}" stroke-width="2.5" stroke-linejoin="round"{dash}/>"#,
                    s.color
                );
                points.clear();
            }
        };
        for (i, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                flush(&mut points);
                continue;
            }
            let (px, py) = (self.px(x, (i + 1) as f64), self.py(y, v));
            let _ = write!(points, "{px:.1},{py:.1} ");
        }
        flush(&mut points);
        if values.len() == 1 {
            // One epoch draws no line: mark the point.
            if let Some(&v) = values.first().filter(|v| v.is_finite()) {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    self.px(x, 1.0),
                    self.py(y, v),
                    s.color
                );
            }
        }
    }
}

fn draw_legend(out: &mut String, series: &[Series]) {
    const ENTRY: f64 = 190.0;
    let y = HEIGHT - 24.0;
    let mut x = (WIDTH - ENTRY * series.len() as f64) / 2.0;
    for s in series {
        let dash = if s.dashed {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2.5"{dash}/>"#,
            x + 36.0,
            s.color
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y}" dominant-baseline="middle">{}</text>"#,
            x + 44.0,
            escape(&s.label)
        );
        x += ENTRY;
    }
}

/// A value axis: its range, whether it is logarithmic, labelled ticks, and unlabelled
/// minor grid lines.
pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub log: bool,
    pub ticks: Vec<(f64, String)>,
    pub minor: Vec<f64>,
}

impl Axis {
    pub fn linear(min: f64, max: f64, ticks: &[f64]) -> Self {
        Axis {
            min,
            max,
            log: false,
            ticks: ticks.iter().map(|&t| (t, format!("{t}"))).collect(),
            minor: Vec::new(),
        }
    }

    /// 0 to `max` (a fraction), labelled in percent every `step`.
    pub fn percent(max: f64, step: f64) -> Self {
        let n = (max / step).round() as usize;
        Axis {
            min: 0.0,
            max,
            log: false,
            ticks: (0..=n)
                .map(|i| {
                    let v = i as f64 * step;
                    (v, format!("{} %", trim(100.0 * v)))
                })
                .collect(),
            minor: Vec::new(),
        }
    }

    /// Whole decades around the finite positive `values`. Over one or two decades
    /// ticks at 1, 2 and 5 × 10ᵏ; over more, at the decades, with minor grid lines at
    /// 2 and 5 × 10ᵏ.
    pub fn log(values: impl Iterator<Item = f64>) -> Self {
        let (lo, hi) = values
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.1, 1.0) };
        let first = lo.log10().floor() as i32;
        let last = (hi.log10().ceil() as i32).max(first + 1);
        let dense = last - first <= 2;
        let (mut ticks, mut minor) = (Vec::new(), Vec::new());
        for k in first..=last {
            let decade = 10f64.powi(k);
            ticks.push((decade, trim(decade)));
            if k < last {
                for v in [2.0 * decade, 5.0 * decade] {
                    if dense {
                        ticks.push((v, trim(v)));
                    } else {
                        minor.push(v);
                    }
                }
            }
        }
        Axis {
            min: 10f64.powi(first),
            max: 10f64.powi(last),
            log: true,
            ticks,
            minor,
        }
    }

    /// Where `v` sits between min (0) and max (1), clamped to the frame.
    pub fn fraction(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        };
        f.clamp(0.0, 1.0)
    }
}

/// 0 to a round number above the largest saturation, so that small fractions stay
/// visible but nothing is cut off.
fn saturation_axis(series: &[Series]) -> Axis {
    let max = series
        .iter()
        .flat_map(|s| s.saturated.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let step = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
        .into_iter()
        .find(|step| max <= 5.0 * step)
        .unwrap_or(0.2);
    let top = ((max / step).ceil().max(1.0) * step).min(1.0);
    Axis::percent(top, step)
}

/// Epoch ticks at a round step, about six of them.
fn epoch_ticks(epochs: usize) -> Vec<f64> {
    let step = [1, 2, 5, 10, 20, 50, 100]
        .into_iter()
        .find(|step| epochs <= 6 * step)
        .unwrap_or(100);
    (0..=epochs).step_by(step).map(|e| e as f64).collect()
}

/// A number without trailing zeros: 0.2, 5, 0.05.
pub fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
