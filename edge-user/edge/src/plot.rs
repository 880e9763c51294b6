//! Line plots as SVG, drawn here so that the status page needs no script, font or stylesheet
//! from anywhere else: a time axis over the last hour, a value axis from zero, one line per
//! series with a legend.

use std::fmt::Write as _;

/// One line: its name in the legend, and its points as (seconds before now, value).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 56.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A plot of `series` over the `span` seconds before now, titled `title`, values in `unit`;
/// `id` names the element for links and tests. `ceiling` fixes the top of the value axis (a
/// ratio's 1, a percentage's 100); otherwise it fits the data.
pub fn chart(
    id: &str,
    title: &str,
    unit: &str,
    series: &[Series],
    span: f64,
    ceiling: Option<f64>,
) -> String {
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let highest = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, value)| value))
        .fold(0.0, f64::max);
    let top = ceiling.unwrap_or_else(|| nice_ceiling(highest));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |ago: f64| LEFT + plot_width * (1.0 - (ago / span).clamp(0.0, 1.0));
    let y = |value: f64| TOP + plot_height * (1.0 - (value / top).clamp(0.0, 1.0));
    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{id}" data-points="{points}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}"><rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/><text x="{LEFT}" y="18" font-family="sans-serif" font-size="13" font-weight="bold">{title} ({unit})</text>"##,
        title = escape(title),
        unit = escape(unit),
    );
    for step in 0..=4 {
        let value = top * f64::from(step) / 4.0;
        let at = y(value);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{x2}" y2="{at:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-family="sans-serif" font-size="10" text-anchor="end">{label}</text>"##,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 4.0,
            ty = at + 3.0,
            label = number(value),
        );
    }
    for step in 0..=4 {
        let ago = span * f64::from(4 - step) / 4.0;
        let at = x(ago);
        let label = if ago == 0.0 {
            "now".to_string()
        } else {
            format!("-{}m", (ago / 60.0).round())
        };
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{bottom}" stroke="#eee"/><text x="{at:.1}" y="{ty}" font-family="sans-serif" font-size="10" text-anchor="middle">{label}</text>"##,
            bottom = HEIGHT - BOTTOM,
            ty = HEIGHT - BOTTOM + 14.0,
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##
    );
    if points == 0 {
        let _ = write!(
            svg,
            r##"<text x="{cx}" y="{cy}" font-family="sans-serif" font-size="12" text-anchor="middle" fill="#888">no data yet</text>"##,
            cx = LEFT + plot_width / 2.0,
            cy = TOP + plot_height / 2.0,
        );
    }
    for (n, line) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let name = escape(&line.name);
        let coordinates: Vec<String> = line
            .points
            .iter()
            .map(|&(ago, value)| format!("{:.1},{:.1}", x(ago), y(value)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline class="series" data-name="{name}" data-points="{count}" fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>"##,
            count = line.points.len(),
            points = coordinates.join(" "),
        );
        // A lone point draws no line: a dot shows it.
        if let [(ago, value)] = line.points[..] {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"##,
                x(ago),
                y(value)
            );
        }
        let (column, row) = (n % 3, n / 3);
        let lx = LEFT + column as f64 * 190.0;
        let ly = HEIGHT - BOTTOM + 30.0 + row as f64 * 13.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="{ry}" width="10" height="3" fill="{colour}"/><text x="{tx}" y="{ly}" font-family="sans-serif" font-size="10">{name}</text>"##,
            ry = ly - 4.0,
            tx = lx + 14.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

/// An axis label: whole numbers without decimals, others with up to two.
fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').to_string()
    }
}

/// `text` safe inside XML and HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fit_the_axes_and_names_are_escaped() {
        let series = [
            Series {
                name: "a<b".into(),
                points: vec![(3600.0, 0.0), (0.0, 40.0)],
            },
            Series {
                name: "one".into(),
                points: vec![(1800.0, 10.0)],
            },
        ];
        let svg = chart("p", "Load", "%", &series, 3600.0, None);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-points="3""#));
        // 40 rounds up to a top of 50: the first line runs from the bottom left corner.
        assert!(
            svg.contains(&format!(
                "points=\"{LEFT:.1},{:.1} {:.1},{:.1}\"",
                HEIGHT - BOTTOM,
                WIDTH - RIGHT,
                TOP + (HEIGHT - TOP - BOTTOM) * 0.2
            )),
            "{svg}"
        );
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains("<circle"), "a lone point is drawn");
        assert!(chart("e", "Empty", "/s", &[], 3600.0, None).contains("no data yet"));
    }

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(40.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.013), 0.02);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(25.0), "25");
    }
}
