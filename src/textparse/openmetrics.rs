//! OpenMetrics 1.0 text (`application/openmetrics-text`).
//!
//! Stricter than the Prometheus format, as Prometheus's `openmetricsparse.go` is:
//! exactly one space between tokens and none inside label sets, no blank lines, no
//! comments other than `# HELP`, `# TYPE`, `# UNIT`, a mandatory `# EOF` as the
//! last line, timestamps in (float) seconds, and optional exemplars.

use super::float::{normal_nan, parse_go_float};
use super::lexer::{
    is_metric_start, quote_bytes, unescape, LabelScratch, LabelSyntax, Lexer, Piece, Scan,
};
use super::parser::{Cursor, Format, Parser};
use super::prom::value_error;
use super::{Entry, Exemplar, MetricType, RawEntry, RawSample};

const SYNTAX: LabelSyntax = LabelSyntax {
    openmetrics: true,
    exemplar: false,
};

const EXEMPLAR_SYNTAX: LabelSyntax = LabelSyntax {
    openmetrics: true,
    exemplar: true,
};

/// Where an exemplar starts after a sample's value or timestamp.
const EXEMPLAR_MARK: &[u8] = b" # {";

const NO_EOF: &str = "data does not end with # EOF";

/// OpenMetrics' grammar; see [`Parser`].
#[derive(Default)]
pub struct OpenMetrics {
    /// Label pairs of the sample's exemplar, reused across samples.
    exemplar_labels: LabelScratch,
}

/// Parses an OpenMetrics text exposition. Yields entries in order and stops after
/// the first error or at `# EOF`.
pub type OpenMetricsParser<'a> = Parser<'a, OpenMetrics>;

impl<'a> Format<'a> for OpenMetrics {
    fn next_entry(&mut self, cur: &mut Cursor<'a>) -> Scan<Option<RawEntry<'a>>> {
        let lex = &cur.lex;
        let start = lex.pos;
        match lex.peek() {
            None => Err(lex.fail_plain(start, NO_EOF.to_string())),
            Some(b'#') => metadata(cur).map(|e| e.map(RawEntry::Other)),
            Some(c) if is_metric_start(c) || c == b'{' => {
                sample(cur, &mut self.exemplar_labels).map(|s| Some(RawEntry::Sample(s)))
            }
            Some(b'\n') => {
                Err(lex.fail_plain(start, "blank line (OpenMetrics allows none)".to_string()))
            }
            Some(b' ' | b'\t') => {
                Err(lex.fail_plain(start, "whitespace at start of line".to_string()))
            }
            Some(_) => Err(lex.invalid_metric_name(start)),
        }
    }
}

/// `# HELP`, `# TYPE`, `# UNIT` or `# EOF`; `Ok(None)` at a valid end.
fn metadata<'a>(cur: &mut Cursor<'a>) -> Scan<Option<Entry<'a>>> {
    let lex = &mut cur.lex;
    let start = lex.pos;
    let rest = lex.rest();
    if rest.starts_with(b"# EOF") {
        lex.pos += 5;
        if lex.peek() == Some(b'\n') {
            lex.pos += 1;
        }
        if !lex.at_end() {
            return Err(lex.fail(lex.pos, "unexpected content after # EOF"));
        }
        return Ok(None);
    }
    let keyword = match rest.get(..7) {
        Some(b"# HELP ") => "HELP",
        Some(b"# TYPE ") => "TYPE",
        Some(b"# UNIT ") => "UNIT",
        _ => {
            let end = lex.line_end(start);
            return Err(lex.fail_plain(
                start,
                format!(
                    "invalid comment {}: OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF",
                    quote_bytes(&lex.b[start..end])
                ),
            ));
        }
    };
    lex.pos += 7;
    let metric_family = lex.meta_name(keyword)?;
    if lex.peek() != Some(b' ') {
        return Err(lex.fail(
            lex.pos,
            &format!("expected a space and text after the metric name in # {keyword}"),
        ));
    }
    let text_start = lex.pos + 1;
    let end = lex.line_end(text_start);
    if end == lex.b.len() {
        return Err(lex.fail_plain(end, NO_EOF.to_string()));
    }
    lex.pos = end + 1;
    let text = &lex.b[text_start..end];
    let Some(text_str) = lex.str_at(text_start, end) else {
        return Err(lex.fail_plain(
            text_start,
            format!("{} text {} is not valid UTF-8", keyword, quote_bytes(text)),
        ));
    };
    let entry = match keyword {
        "HELP" => Entry::Help {
            metric_family,
            help: unescape(text_str, true),
        },
        "TYPE" => {
            let kind = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"gaugehistogram" => MetricType::GaugeHistogram,
                    b"summary" => MetricType::Summary,
                    b"info" => MetricType::Info,
                    b"stateset" => MetricType::StateSet,
                    b"unknown" => MetricType::Unknown,
                    _ => {
                        return Err(lex.fail_plain(
                            text_start,
                            format!(
                                "invalid metric type {} (want counter, gauge, histogram, gaugehistogram, summary, info, stateset or unknown)",
                                quote_bytes(text)
                            ),
                        ))
                    }
                };
            cur.kind = kind;
            Entry::Type {
                metric_family,
                kind,
            }
        }
        _ => {
            // A unit, when given, must be the last component of the name.
            let unit = text_str;
            let fits = unit.is_empty()
                || metric_family
                    .strip_suffix(unit)
                    .is_some_and(|head| head.ends_with('_'));
            if !fits {
                return Err(lex.fail_plain(
                    text_start,
                    format!(
                        "unit {} is not a suffix of metric {} (want \"<name>_{}\")",
                        quote_bytes(unit.as_bytes()),
                        quote_bytes(metric_family.as_bytes()),
                        unit
                    ),
                ));
            }
            Entry::Unit {
                metric_family,
                unit,
            }
        }
    };
    Ok(Some(entry))
}

/// Scans one sample line, collecting its label pairs without building them.
fn sample<'a>(cur: &mut Cursor<'a>, exemplar_labels: &mut LabelScratch) -> Scan<RawSample<'a>> {
    let start = cur.lex.pos;
    cur.sample_start = start;
    cur.labels.clear();
    cur.deferred = None;
    let mut name = None;
    if let Some((s, e)) = cur.lex.metric_name() {
        let lex = &cur.lex;
        match lex.peek() {
            Some(b' ' | b'{') => {}
            None => return Err(lex.fail(lex.pos, "expected a space and value after metric")),
            Some(c) if c.is_ascii_whitespace() => {
                return Err(lex.fail(lex.pos, "expected a space and value after metric"))
            }
            Some(_) => return Err(lex.invalid_metric_name(start)),
        }
        name = Some(Piece::Body { start: s, end: e });
    }
    if cur.lex.peek() == Some(b'{') {
        // Skipped over after a plain metric name; see `prom::sample`.
        let deferred = name.is_some_and(|n| cur.defer_label_set(n, SYNTAX, false));
        if !deferred {
            let lex = &mut cur.lex;
            if let Some(quoted) = cur.labels.parse_label_set(lex, SYNTAX, cur.kind)? {
                if name.is_some() {
                    return Err(lex.fail_plain(start, "metric name given twice".to_string()));
                }
                name = Some(quoted);
            }
        }
    }
    cur.metric_name(name, start)?;
    let series_end = cur.lex.pos;
    let rest = value_and_rest(&mut cur.lex, exemplar_labels);
    let (value, timestamp_ms, exemplar) = cur.first_error(rest)?;
    Ok(RawSample {
        series: &cur.lex.b[start..series_end],
        value,
        timestamp_ms,
        exemplar,
    })
}

/// Scans a sample's value, optional timestamp and optional exemplar, through the
/// end of the line.
fn value_and_rest(
    lex: &mut Lexer<'_>,
    exemplar_labels: &mut LabelScratch,
) -> Scan<(f64, Option<i64>, Option<Exemplar>)> {
    if lex.peek() != Some(b' ') {
        return Err(lex.fail(lex.pos, "expected a space and value after metric"));
    }
    lex.pos += 1;
    let value = float_token(lex, "value")?;
    let value = if value.is_nan() { normal_nan() } else { value };

    let mut timestamp_ms = None;
    let mut exemplar = None;
    match lex.peek() {
        None => return Err(lex.fail_plain(lex.pos, NO_EOF.to_string())),
        Some(b'\n') => lex.pos += 1,
        _ if lex.rest().starts_with(EXEMPLAR_MARK) => {
            exemplar = Some(parse_exemplar(lex, exemplar_labels)?);
        }
        _ => {
            lex.pos += 1;
            timestamp_ms = Some(timestamp_token(lex, "timestamp")?);
            match lex.peek() {
                None => return Err(lex.fail_plain(lex.pos, NO_EOF.to_string())),
                Some(b'\n') => lex.pos += 1,
                _ if lex.rest().starts_with(EXEMPLAR_MARK) => {
                    exemplar = Some(parse_exemplar(lex, exemplar_labels)?);
                }
                _ => {
                    return Err(
                        lex.fail(lex.pos, "expected end of line or exemplar after timestamp")
                    )
                }
            }
        }
    }
    Ok((value, timestamp_ms, exemplar))
}

/// Reads a float token (up to a space, newline or the end) at the cursor.
fn float_token(lex: &mut Lexer<'_>, what: &str) -> Scan<f64> {
    let at = lex.take_while(|c| c != b' ' && c != b'\n');
    let raw = &lex.b[at..lex.pos];
    if raw.is_empty() {
        return Err(lex.fail(at, &format!("expected {what}")));
    }
    parse_go_float(raw).map_err(|e| lex.fail_plain(at, value_error(what, raw, e)))
}

/// Reads a timestamp in seconds and converts it to milliseconds the way
/// Prometheus does, `int64(seconds * 1000)`, which truncates toward zero.
fn timestamp_token(lex: &mut Lexer<'_>, what: &str) -> Scan<i64> {
    let at = lex.pos;
    let seconds = float_token(lex, what)?;
    let ms = seconds * 1000.0;
    // i64::MIN and 2^63 are exact f64s; anything outside (NaN and the infinities
    // included) cannot be a timestamp.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&ms) {
        return Err(lex.fail_plain(
            at,
            format!(
                "invalid {what} {}: must be a finite number of seconds",
                quote_bytes(&lex.b[at..lex.pos])
            ),
        ));
    }
    Ok(ms as i64)
}

/// Parses ` # {labels} value [timestamp]\n` with the cursor on the leading space.
fn parse_exemplar(lex: &mut Lexer<'_>, labels: &mut LabelScratch) -> Scan<Exemplar> {
    let start = lex.pos + 3;
    lex.pos = start;
    labels.clear();
    labels.parse_label_set(lex, EXEMPLAR_SYNTAX, MetricType::Unknown)?;
    if lex.peek() != Some(b' ') {
        return Err(lex.fail(lex.pos, "expected a space and value after exemplar labels"));
    }
    lex.pos += 1;
    let value = float_token(lex, "exemplar value")?;
    let value = if value.is_nan() { normal_nan() } else { value };
    let timestamp_ms = match lex.peek() {
        None => return Err(lex.fail_plain(lex.pos, NO_EOF.to_string())),
        Some(b'\n') => {
            lex.pos += 1;
            None
        }
        _ => {
            lex.pos += 1;
            let ts = timestamp_token(lex, "exemplar timestamp")?;
            match lex.peek() {
                None => return Err(lex.fail_plain(lex.pos, NO_EOF.to_string())),
                Some(b'\n') => lex.pos += 1,
                _ => return Err(lex.fail(lex.pos, "expected end of line after exemplar timestamp")),
            }
            Some(ts)
        }
    };
    Ok(Exemplar {
        labels: labels.build(lex, start)?,
        value,
        timestamp_ms,
    })
}
