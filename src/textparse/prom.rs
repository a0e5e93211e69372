//! The Prometheus text exposition format, version 0.0.4 (`text/plain`).
//!
//! Accepts what Prometheus's `promparse.go` accepts: spaces and tabs between any
//! two tokens, blank lines, free `#` comments, trailing commas in label sets,
//! a raw newline inside a quoted label value, an optional integer millisecond
//! timestamp. One deliberate difference: a metric name must be followed by
//! whitespace or `{`, so `a-b 1` is an invalid metric name here rather than the
//! sample `a` with value `-b`.

use super::float::{normal_nan, parse_go_float, FloatError};
use super::lexer::{is_metric_start, unescape, LabelScratch, LabelSyntax, Lexer, Piece, Scan};
use super::{Entry, MetricType, ParseError, RawEntry, RawSample};

const SYNTAX: LabelSyntax = LabelSyntax {
    openmetrics: false,
    exemplar: false,
};

/// Parses a Prometheus text exposition. Yields entries in order and stops after
/// the first error.
pub struct PromParser<'a> {
    lex: Lexer<'a>,
    /// Label pairs of the sample being parsed, reused across samples.
    labels: LabelScratch,
    /// The type from the most recent `# TYPE` line, which decides whether `le` or
    /// `quantile` values are normalised (as Prometheus does, whatever the family).
    kind: MetricType,
    /// Where the last sample's line starts, for errors found building its labels.
    sample_start: usize,
    done: bool,
}

impl<'a> PromParser<'a> {
    pub fn new(body: &'a [u8]) -> PromParser<'a> {
        PromParser {
            lex: Lexer::new(body),
            labels: LabelScratch::default(),
            kind: MetricType::Unknown,
            sample_start: 0,
            done: false,
        }
    }

    /// The next entry without building the sample's label set: a sample comes as
    /// its series text (see [`RawSample`]); [`PromParser::labels`] builds the
    /// labels when the caller needs them.
    pub fn next_raw(&mut self) -> Option<Result<RawEntry<'a>, ParseError>> {
        if self.done {
            return None;
        }
        let scanned = self.next_entry();
        super::lexer::finish(&mut self.done, &self.lex, scanned)
    }

    /// The labels of the sample [`PromParser::next_raw`] returned last (an error
    /// for a repeated label name, which also ends the parse).
    pub fn labels(&mut self) -> Result<crate::labels::Labels, ParseError> {
        self.labels
            .build(&self.lex, self.sample_start)
            .map_err(|fail| {
                self.done = true;
                self.lex.error(fail)
            })
    }

    /// Rejects quoted metric and label names outside the legacy charset, as
    /// Prometheus does with `metric_name_validation_scheme: legacy`.
    pub fn with_legacy_names(mut self) -> Self {
        self.lex.legacy_names = true;
        self
    }

    fn next_entry(&mut self) -> Scan<Option<RawEntry<'a>>> {
        loop {
            self.lex.skip_blanks();
            match self.lex.peek() {
                None => return Ok(None),
                Some(b'\n') => self.lex.pos += 1,
                Some(b'#') => return self.comment_or_metadata().map(|e| Some(RawEntry::Other(e))),
                Some(c) if is_metric_start(c) || c == b'{' => {
                    return self.sample().map(|s| Some(RawEntry::Sample(s)))
                }
                Some(_) => return Err(self.lex.invalid_metric_name(self.lex.pos)),
            }
        }
    }

    /// A `#` line: `# HELP`, `# TYPE`, or a comment. Lines that merely start like
    /// metadata (`#HELP x`, `# HELPER`, `# HELP` alone) are comments, as in
    /// Prometheus.
    fn comment_or_metadata(&mut self) -> Scan<Entry<'a>> {
        let lex = &mut self.lex;
        lex.pos += 1;
        let after_hash = lex.pos;
        lex.skip_blanks();
        let rest = lex.rest();
        let keyword = if lex.pos == after_hash || rest.len() < 5 || !matches!(rest[4], b' ' | b'\t')
        {
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
            self.kind = kind;
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
    fn sample(&mut self) -> Scan<RawSample<'a>> {
        let lex = &mut self.lex;
        let start = lex.pos;
        self.sample_start = start;
        self.labels.clear();
        let mut name = None;
        let mut series_end = start;
        if let Some((s, e)) = lex.metric_name() {
            if !matches!(lex.peek(), None | Some(b' ' | b'\t' | b'\n' | b'{')) {
                return Err(lex.invalid_metric_name(start));
            }
            name = Some(Piece::Body { start: s, end: e });
            series_end = e;
            lex.skip_blanks();
        }
        if lex.peek() == Some(b'{') {
            if let Some(quoted) = self.labels.parse_label_set(lex, SYNTAX, self.kind)? {
                if name.is_some() {
                    return Err(lex.fail_plain(start, "metric name given twice".to_string()));
                }
                name = Some(quoted);
            }
            series_end = lex.pos;
            lex.skip_blanks();
        }
        let Some(name) = name else {
            return Err(lex.fail_plain(start, "metric name missing from label set".to_string()));
        };
        self.labels.push_metric_name(lex, name, start)?;

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
                    Some(_) => {
                        return Err(lex.fail(lex.pos, "expected end of line after timestamp"))
                    }
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
        Ok(RawSample {
            series: &lex.b[start..series_end],
            value,
            timestamp_ms,
            exemplar: None,
        })
    }
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

impl<'a> Iterator for PromParser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.next_raw()? {
            Ok(RawEntry::Sample(s)) => self.labels().map(|labels| s.into_entry(labels)),
            Ok(RawEntry::Other(e)) => Ok(e),
            Err(e) => Err(e),
        })
    }
}
