//! The Prometheus text exposition format, version 0.0.4 (`text/plain`).
//!
//! Accepts what Prometheus's `promparse.go` accepts: spaces and tabs between any
//! two tokens, blank lines, free `#` comments, trailing commas in label sets,
//! a raw newline inside a quoted label value, an optional integer millisecond
//! timestamp. One deliberate difference: a metric name must be followed by
//! whitespace or `{`, so `a-b 1` is an invalid metric name here rather than the
//! sample `a` with value `-b`.

use super::float::{normal_nan, parse_go_float, FloatError};
use super::lexer::{is_metric_start, unescape, LabelSyntax, Lexer, Piece, Scan};
use super::parser::{Cursor, Format, Parser};
use super::{Entry, MetricType, RawEntry, RawSample};

const SYNTAX: LabelSyntax = LabelSyntax {
    openmetrics: false,
    exemplar: false,
};

/// The Prometheus text format's grammar; see [`Parser`].
#[derive(Default)]
pub struct Prom;

/// Parses a Prometheus text exposition. Yields entries in order and stops after
/// the first error.
pub type PromParser<'a> = Parser<'a, Prom>;

impl<'a> Format<'a> for Prom {
    fn next_entry(&mut self, cur: &mut Cursor<'a>) -> Scan<Option<RawEntry<'a>>> {
        loop {
            cur.lex.skip_blanks();
            match cur.lex.peek() {
                None => return Ok(None),
                Some(b'\n') => cur.lex.pos += 1,
                Some(b'#') => return comment_or_metadata(cur).map(|e| Some(RawEntry::Other(e))),
                Some(c) if is_metric_start(c) || c == b'{' => {
                    return sample(cur).map(|s| Some(RawEntry::Sample(s)))
                }
                Some(_) => return Err(cur.lex.invalid_metric_name(cur.lex.pos)),
            }
        }
    }
}

/// A `#` line: `# HELP`, `# TYPE`, or a comment. Lines that merely start like
/// metadata (`#HELP x`, `# HELPER`, `# HELP` alone) are comments, as in
/// Prometheus.
fn comment_or_metadata<'a>(cur: &mut Cursor<'a>) -> Scan<Entry<'a>> {
    let lex = &mut cur.lex;
    lex.pos += 1;
    let after_hash = lex.pos;
    lex.skip_blanks();
    let rest = lex.rest();
    let keyword = if lex.pos == after_hash || rest.len() < 5 || !matches!(rest[4], b' ' | b'\t') {
        None
    } else if rest.starts_with(b"HELP") {
        Some("HELP")
    } else if rest.starts_with(b"TYPE") {
        Some("TYPE")
    } else {
        None
    };
    let Some(keyword) = keyword else {
        lex.pos = (lex.line_end(lex.pos) + 1).min(lex.b.len());
        return Ok(Entry::Comment);
    };
    lex.pos += 4;
    lex.skip_blanks();
    let metric_family = lex.meta_name(keyword)?;

    // Like Prometheus's lexer, the text is the rest of the line minus the one
    // separator byte after the name, or empty if only blanks remain.
    let end = lex.line_end(lex.pos);
    let rest = &lex.b[lex.pos..end];
    let text_start = if rest.iter().all(|&c| c == b' ' || c == b'\t') {
        end
    } else {
        lex.pos + 1
    };
    let text_at = lex.pos;
    lex.pos = (end + 1).min(lex.b.len());
    let text = &lex.b[text_start..end];
    if keyword == "TYPE" {
        let kind = match text {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" => MetricType::Unknown,
            _ => {
                return Err(lex.fail_plain(
                    text_at,
                    format!(
                    "invalid metric type {} (want counter, gauge, histogram, summary or untyped)",
                    super::lexer::quote_bytes(text)
                ),
                ))
            }
        };
        cur.kind = kind;
        return Ok(Entry::Type {
            metric_family,
            kind,
        });
    }
    let Some(help) = lex.str_at(text_start, end) else {
        return Err(lex.fail_plain(
            text_at,
            format!(
                "help text {} is not valid UTF-8",
                super::lexer::quote_bytes(text)
            ),
        ));
    };
    Ok(Entry::Help {
        metric_family,
        help: unescape(help, false),
    })
}

/// Scans one sample line, collecting its label pairs without building them.
fn sample<'a>(cur: &mut Cursor<'a>) -> Scan<RawSample<'a>> {
    let start = cur.lex.pos;
    cur.sample_start = start;
    cur.labels.clear();
    cur.deferred = None;
    let mut name = None;
    let mut series_end = start;
    if let Some((s, e)) = cur.lex.metric_name() {
        if !matches!(cur.lex.peek(), None | Some(b' ' | b'\t' | b'\n' | b'{')) {
            return Err(cur.lex.invalid_metric_name(start));
        }
        name = Some(Piece::Body { start: s, end: e });
        series_end = e;
        cur.lex.skip_blanks();
    }
    if cur.lex.peek() == Some(b'{') {
        // After a plain metric name the set is only skipped over: the scrape
        // loop parses it only for a series it has not seen (`Parser::labels`).
        let deferred = name.is_some_and(|n| cur.defer_label_set(n, SYNTAX, true));
        if !deferred {
            let lex = &mut cur.lex;
            if let Some(quoted) = cur.labels.parse_label_set(lex, SYNTAX, cur.kind)? {
                if name.is_some() {
                    return Err(lex.fail_plain(start, "metric name given twice".to_string()));
                }
                name = Some(quoted);
            }
        }
        series_end = cur.lex.pos;
        cur.lex.skip_blanks();
    }
    cur.metric_name(name, start)?;
    let rest = value_and_timestamp(&mut cur.lex);
    let (value, timestamp_ms) = cur.first_error(rest)?;
    Ok(RawSample {
        series: &cur.lex.b[start..series_end],
        value,
        timestamp_ms,
        exemplar: None,
    })
}

/// Scans a sample's value and optional timestamp, through the end of the line.
fn value_and_timestamp(lex: &mut Lexer<'_>) -> Scan<(f64, Option<i64>)> {
    let value_at = lex.take_while(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'{'));
    let raw_value = &lex.b[value_at..lex.pos];
    if raw_value.is_empty() {
        return Err(lex.fail(value_at, "expected value after metric"));
    }
    let value = match parse_go_float(raw_value) {
        Ok(v) if v.is_nan() => normal_nan(),
        Ok(v) => v,
        Err(e) => return Err(lex.fail_plain(value_at, value_error("value", raw_value, e))),
    };

    lex.skip_blanks();
    let timestamp_ms = match lex.peek() {
        None => None,
        Some(b'\n') => {
            lex.pos += 1;
            None
        }
        Some(c) if c.is_ascii_digit() => {
            let ts_at = lex.take_while(|c| c.is_ascii_digit());
            let raw = &lex.b[ts_at..lex.pos];
            let Some(ts) = std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            else {
                return Err(lex.fail_plain(
                    ts_at,
                    format!(
                        "invalid timestamp {}: out of range",
                        super::lexer::quote_bytes(raw)
                    ),
                ));
            };
            lex.skip_blanks();
            match lex.peek() {
                None => {}
                Some(b'\n') => lex.pos += 1,
                Some(_) => return Err(lex.fail(lex.pos, "expected end of line after timestamp")),
            }
            Some(ts)
        }
        Some(_) => {
            return Err(lex.fail(
                lex.pos,
                "expected integer timestamp or end of line after value",
            ))
        }
    };
    Ok((value, timestamp_ms))
}

/// The message for a sample value, timestamp or exemplar value that is not a
/// number, with a hint for the usual cause of a stray carriage return.
pub(crate) fn value_error(what: &str, raw: &[u8], e: FloatError) -> String {
    let hint = if raw.contains(&b'\r') {
        " (carriage return: lines must end in \\n alone)"
    } else {
        ""
    };
    format!(
        "invalid {what} {}: {}{hint}",
        super::lexer::quote_bytes(raw),
        e.describe()
    )
}
