//! Turning runs into the numbers a benchmark reports: medians, readable rates, and a Markdown
//! table that reads the same on a terminal and in docs/BENCHMARKS.md.

/// The median: the middle value of an odd count, the mean of the middle two of an even one.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if !n.is_multiple_of(2) => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A rate with three significant digits: `735 k`, `1.23 M`.
pub fn rate(per_second: f64) -> String {
    let (value, unit) = if per_second >= 1e6 {
        (per_second / 1e6, " M")
    } else if per_second >= 1e3 {
        (per_second / 1e3, " k")
    } else {
        (per_second, "")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{unit}")
}

/// An integer with thousands separated: `1,000,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// `part / whole` as a whole percentage, or `n/a` when either is missing.
pub fn percent(part: Option<f64>, whole: Option<f64>) -> String {
    match (part, whole) {
        (Some(part), Some(whole)) if whole > 0.0 => format!("{:.0} %", 100.0 * part / whole),
        _ => "n/a".to_string(),
    }
}

/// A Markdown table with padded columns.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty, extra ones dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
        let mut text = line(&self.headers);
        text.push_str(&line(&rule));
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

/// `document` with its `## heading` section (up to the next `## ` heading) replaced by
/// `section`, or `section` appended when there is none, so that each benchmark rewrites only its
/// own part of docs/BENCHMARKS.md. `section` starts with its heading line.
pub fn replace_section(document: &str, heading: &str, section: &str) -> String {
    let Some((start, end)) = find_section(document, heading) else {
        let mut text = document.trim_end().to_string();
        text.push_str("\n\n");
        text.push_str(section);
        return text;
    };
    let mut text = document[..start].to_string();
    text.push_str(section);
    if end < document.len() {
        text.push('\n');
        text.push_str(&document[end..]);
    }
    text
}

/// Where `document`'s `## heading` section starts and ends (at the next `## ` heading).
fn find_section(document: &str, heading: &str) -> Option<(usize, usize)> {
    let marker = format!("## {heading}\n");
    let start = if document.starts_with(&marker) {
        0
    } else {
        document.find(&format!("\n{marker}"))? + 1
    };
    let body = start + marker.len();
    let end = document[body..]
        .find("\n## ")
        .map_or(document.len(), |at| body + at + 1);
    Some((start, end))
}

/// Like [`replace_section`], for a run that measured only some of the section's tables: the
/// `### ` subsections of `section` replace those of the same title, and the document's other
/// subsections stay where they were (each says which run produced it), so a partial run does
/// not drop the tables it skipped.
pub fn merge_section(document: &str, heading: &str, section: &str) -> String {
    let Some((start, end)) = find_section(document, heading) else {
        return replace_section(document, heading, section);
    };
    let old = &document[start..end];
    let (preamble, fresh) = subsections(section);
    let newer = |title: &str| fresh.iter().find(|(t, _)| *t == title).copied();
    // The old order, each table replaced by this run's where it measured it ...
    let mut parts: Vec<(&str, &str)> = subsections(old)
        .1
        .into_iter()
        .map(|(title, text)| newer(title).unwrap_or((title, text)))
        .collect();
    // ... and a table new to the document after the one this run put before it.
    for (at, part) in fresh.iter().enumerate() {
        if parts.iter().any(|(t, _)| *t == part.0) {
            continue;
        }
        let after = at
            .checked_sub(1)
            .and_then(|before| parts.iter().position(|(t, _)| *t == fresh[before].0));
        parts.insert(after.map_or(0, |p| p + 1), *part);
    }
    let mut merged = preamble.to_string();
    for (_, text) in parts {
        merged.push_str(text.trim_end());
        merged.push_str("\n\n");
    }
    let merged = format!("{}\n", merged.trim_end());
    replace_section(document, heading, &merged)
}

/// A section's text before its first `### ` heading, and each subsection as (title, text).
fn subsections(section: &str) -> (&str, Vec<(&str, &str)>) {
    let mut starts: Vec<usize> = section
        .match_indices("\n### ")
        .map(|(at, _)| at + 1)
        .collect();
    let preamble = &section[..starts.first().copied().unwrap_or(section.len())];
    starts.push(section.len());
    let parts = starts
        .windows(2)
        .map(|pair| {
            let text = &section[pair[0]..pair[1]];
            let title = text["### ".len()..].lines().next().unwrap_or_default();
            (title, text)
        })
        .collect();
    (preamble, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn rates_keep_three_digits() {
        assert_eq!(rate(735_141.0), "735 k");
        assert_eq!(rate(1_234_567.0), "1.23 M");
        assert_eq!(rate(45_668.3), "45.7 k");
        assert_eq!(rate(950.0), "950");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(999), "999");
        assert_eq!(count(0), "0");
    }

    #[test]
    fn percent_needs_both_sides() {
        assert_eq!(percent(Some(900.0), Some(1000.0)), "90 %");
        assert_eq!(percent(None, Some(1000.0)), "n/a");
        assert_eq!(percent(Some(1.0), Some(0.0)), "n/a");
    }

    #[test]
    fn a_section_replaces_only_itself() {
        let document = "# Benchmarks\n\n## DNS\n\nold\n\n## HTTP\n\nkept\n";
        assert_eq!(
            replace_section(document, "DNS", "## DNS\n\nnew\n"),
            "# Benchmarks\n\n## DNS\n\nnew\n\n## HTTP\n\nkept\n"
        );
        assert_eq!(
            replace_section(document, "HTTP", "## HTTP\n\nnew\n"),
            "# Benchmarks\n\n## DNS\n\nold\n\n## HTTP\n\nnew\n"
        );
        assert_eq!(
            replace_section("# Benchmarks\n", "DNS", "## DNS\n\nnew\n"),
            "# Benchmarks\n\n## DNS\n\nnew\n"
        );
    }

    #[test]
    fn a_partial_run_keeps_the_subsections_it_did_not_measure() {
        let document = "# B\n\n## DNS\n\nold run\n\n### Throughput\n\nold t\n\n### Cost\n\nold c\n\n\
                        ### Scale\n\nold s\n\n### Method\n\nold m\n\n## Mesh\n\nkept\n";
        let section = "## DNS\n\nnew run\n\n### Scale\n\nnew s\n\n### Method\n\nnew m\n";
        assert_eq!(
            merge_section(document, "DNS", section),
            "# B\n\n## DNS\n\nnew run\n\n### Throughput\n\nold t\n\n### Cost\n\nold c\n\n\
             ### Scale\n\nnew s\n\n### Method\n\nnew m\n\n## Mesh\n\nkept\n"
        );
        // A subsection the document lacks goes where the run put it.
        let section = "## DNS\n\nnew run\n\n### Cost\n\nnew c\n\n### Latency\n\nnew l\n";
        assert_eq!(
            merge_section(document, "DNS", section),
            "# B\n\n## DNS\n\nnew run\n\n### Throughput\n\nold t\n\n### Cost\n\nnew c\n\n\
             ### Latency\n\nnew l\n\n### Scale\n\nold s\n\n### Method\n\nold m\n\n## Mesh\n\nkept\n"
        );
        assert_eq!(
            merge_section("# B\n", "DNS", section),
            replace_section("# B\n", "DNS", section)
        );
    }

    #[test]
    fn table_pads_columns() {
        let mut table = Table::new(&["peer", "qps"]);
        table.row(vec!["edge XDP".into(), "735 k".into()]);
        table.row(vec!["NSD".into()]);
        assert_eq!(
            table.markdown(),
            "| peer     | qps   |\n| -------- | ----- |\n| edge XDP | 735 k |\n| NSD      |       |\n"
        );
    }
}
