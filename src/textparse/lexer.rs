//! The byte-level scanning both text parsers share: names, quoted strings, label
//! sets, and turning a failure position into a `ParseError` with line and excerpt.

use std::borrow::Cow;

use super::float::normalize_float_label;
use super::{MetricType, ParseError};
use crate::labels::{Label, Labels, LABEL_STRING_LEN_MAX, METRIC_NAME};

/// Most labels one series (or exemplar) may carry. Real expositions have a handful;
/// this only bounds the scratch space a hostile body can make the parser hold.
pub const LABELS_PER_SERIES_MAX: usize = 4096;

/// Longest excerpt of offending text quoted in an error message, in bytes.
const EXCERPT_BYTES_MAX: usize = 40;

/// A failure found while scanning: where it happened and what was wrong. The
/// parser turns it into a [`ParseError`], counting lines only then, so the happy
/// path never pays for line bookkeeping. Public (though not nameable outside
/// `textparse`) because `parser::Format`, which a public type is generic over,
/// returns it.
#[derive(Debug)]
pub struct Fail {
    pub(crate) pos: usize,
    pub(crate) message: String,
}

pub(crate) type Scan<T> = Result<T, Fail>;

/// `[a-zA-Z_:]`: the first byte of a metric name in the legacy charset.
pub(crate) fn is_metric_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_metric_char(c: u8) -> bool {
    is_metric_start(c) || c.is_ascii_digit()
}

/// `[a-zA-Z_]`: the first byte of a label name in the legacy charset.
fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    is_label_start(c) || c.is_ascii_digit()
}

/// Where a string used in a label set lives: in the exposition itself, in the
/// parser's scratch buffer (after unescaping or normalising), or nowhere because it
/// is the constant `__name__`. Spans instead of `&str` let the scratch buffer grow
/// while earlier pieces still refer to it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Piece {
    Body { start: usize, end: usize },
    Scratch { start: usize, end: usize },
    MetricNameLabel,
}

/// The exposition being parsed, with its UTF-8 view when the whole body is valid
/// UTF-8 (the normal case), which makes every slice of it a free `&str`.
#[derive(Clone)]
pub(crate) struct Lexer<'a> {
    pub b: &'a [u8],
    text: Option<&'a str>,
    pub pos: usize,
    /// Reject quoted names outside the legacy charset (`metric_name_validation_scheme:
    /// legacy` in Prometheus); by default quoted names may be any UTF-8.
    pub legacy_names: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(b: &'a [u8]) -> Lexer<'a> {
        Lexer {
            b,
            text: std::str::from_utf8(b).ok(),
            pos: 0,
            legacy_names: false,
        }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or(&[])
    }

    /// Skips spaces and tabs, the only whitespace the Prometheus text format knows.
    #[inline]
    pub fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Advances over bytes for which `keep` holds and returns where the run began.
    #[inline]
    pub fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            self.pos += 1;
        }
        start
    }

    /// Index of the next `\n` at or after `from`, or the end of the body.
    pub fn line_end(&self, from: usize) -> usize {
        self.b
            .get(from..)
            .and_then(|r| r.iter().position(|&c| c == b'\n'))
            .map_or(self.b.len(), |i| from + i)
    }

    /// The bytes `start..end` as text, if they are valid UTF-8.
    #[inline]
    pub fn str_at(&self, start: usize, end: usize) -> Option<&'a str> {
        match self.text {
            Some(t) => t.get(start..end),
            None => std::str::from_utf8(self.b.get(start..end)?).ok(),
        }
    }

    /// Scans a legacy metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) at the cursor.
    /// Returns `None`, without moving, if the cursor is not at one.
    pub fn metric_name(&mut self) -> Option<(usize, usize)> {
        if !self.peek().is_some_and(is_metric_start) {
            return None;
        }
        let start = self.take_while(is_metric_char);
        Some((start, self.pos))
    }

    /// Scans the metric family name of a `# HELP`/`# TYPE`/`# UNIT` line: a legacy
    /// name or a quoted UTF-8 one (whose escapes are undone).
    pub fn meta_name(&mut self, keyword: &str) -> Scan<Cow<'a, str>> {
        if let Some((start, end)) = self.metric_name() {
            return Ok(Cow::Borrowed(self.str_at(start, end).unwrap_or("")));
        }
        if self.peek() != Some(b'"') {
            return Err(self.fail(self.pos, &format!("expected metric name after {keyword}")));
        }
        let open = self.pos;
        let (start, end, _) = self.quoted(true, "metric name")?;
        let Some(raw) = self.str_at(start, end) else {
            return Err(self.fail_plain(
                open,
                format!(
                    "invalid UTF-8 in metric name {}",
                    quote_bytes(&self.b[open..self.pos])
                ),
            ));
        };
        if raw.is_empty() {
            return Err(self.fail_plain(open, "empty metric name".to_string()));
        }
        let name = unescape(raw, true);
        self.check_legacy(open, &name, true)?;
        Ok(name)
    }

    /// With [`Lexer::legacy_names`] set, rejects a quoted name outside the legacy
    /// charset of metric names (`metric`) or label names.
    pub fn check_legacy(&self, at: usize, name: &str, metric: bool) -> Scan<()> {
        if !self.legacy_names {
            return Ok(());
        }
        let b = name.as_bytes();
        let ok = if metric {
            b.first().is_some_and(|&c| is_metric_start(c)) && b.iter().all(|&c| is_metric_char(c))
        } else {
            b.first().is_some_and(|&c| is_label_start(c)) && b.iter().all(|&c| is_label_char(c))
        };
        if ok {
            return Ok(());
        }
        let (what, charset) = if metric {
            ("metric", "[a-zA-Z_:][a-zA-Z0-9_:]*")
        } else {
            ("label", "[a-zA-Z_][a-zA-Z0-9_]*")
        };
        Err(self.fail_plain(
            at,
            format!(
                "invalid {what} name {} (legacy names must match {charset})",
                quote_bytes(b)
            ),
        ))
    }

    /// The error for a line that starts with something other than a metric name:
    /// quotes the word there.
    pub fn invalid_metric_name(&self, start: usize) -> Fail {
        let rest = self.b.get(start..).unwrap_or(&[]);
        let word = rest
            .iter()
            .position(|&c| matches!(c, b' ' | b'\t' | b'\n' | b'{'))
            .unwrap_or(rest.len())
            .max(1)
            .min(rest.len());
        self.fail_plain(
            start,
            format!("invalid metric name {}", quote_bytes(&rest[..word])),
        )
    }

    /// Moves past the label set whose `{` is at the cursor without parsing it, to
    /// just after the first `}` outside quoted strings (where a successful parse of
    /// the set ends too). Returns false, without moving, when the set looks unusual:
    /// a newline outside quotes (or inside them unless `raw_newline`), a backslash
    /// before a newline or the end, no closing brace. The caller then parses the set
    /// at once, which finds the exact error.
    #[inline]
    pub fn skip_label_set(&mut self, raw_newline: bool) -> bool {
        let b = self.b;
        let mut quoted = false;
        let mut from = self.pos + 1;
        // Only quotes, backslashes, newlines and closing braces matter here.
        while let Some(i) = find_label_set_byte(b, from) {
            let c = b[i];
            from = i + 1;
            match c {
                b'"' => quoted = !quoted,
                b'\\' if quoted => {
                    if matches!(b.get(i + 1), None | Some(b'\n')) {
                        return false;
                    }
                    from = i + 2;
                }
                b'\n' if !quoted || !raw_newline => return false,
                b'}' if !quoted => {
                    self.pos = i + 1;
                    return true;
                }
                _ => {}
            }
        }
        false
    }

    /// Scans a double-quoted string whose opening quote is at the cursor, leaving
    /// the cursor after the closing quote. Any byte may follow a backslash except
    /// a newline, as in Prometheus's lexers; `raw_newline` says whether a bare
    /// newline may appear inside. Returns the span between the quotes and whether
    /// it contains a backslash.
    #[inline]
    pub fn quoted(&mut self, raw_newline: bool, what: &str) -> Scan<(usize, usize, bool)> {
        let open = self.pos;
        let start = open + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            match self.b.get(i) {
                None => return Err(self.fail_plain(open, format!("unterminated quoted {what}"))),
                Some(b'"') => break,
                Some(b'\\') => {
                    if matches!(self.b.get(i + 1), None | Some(b'\n')) {
                        return Err(
                            self.fail_plain(i, format!("backslash at end of line in {what}"))
                        );
                    }
                    escaped = true;
                    i += 2;
                }
                Some(b'\n') if !raw_newline => {
                    return Err(self.fail_plain(
                        open,
                        format!("unterminated quoted {what} (newline before closing quote)"),
                    ))
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        Ok((start, i, escaped))
    }

    /// A failure at `pos` of the form "<expected>, got <excerpt>".
    pub fn fail(&self, pos: usize, expected: &str) -> Fail {
        Fail {
            pos,
            message: format!("{expected}, got {}", self.excerpt(pos)),
        }
    }

    pub fn fail_plain(&self, pos: usize, message: String) -> Fail {
        Fail { pos, message }
    }

    /// The text at `pos` for an error message: the rest of the word there, quoted,
    /// or "end of line" / "end of input".
    pub fn excerpt(&self, pos: usize) -> String {
        match self.b.get(pos) {
            None => "end of input".to_string(),
            Some(b'\n') => "end of line".to_string(),
            Some(_) => {
                // Blanks alone say little, so they are shown with the word after them.
                let rest = &self.b[pos..];
                let blanks = rest
                    .iter()
                    .take_while(|&&c| c == b' ' || c == b'\t')
                    .count();
                let word = rest[blanks..]
                    .iter()
                    .position(|&c| matches!(c, b' ' | b'\t' | b'\n'))
                    .unwrap_or(rest.len() - blanks);
                quote_bytes(&rest[..blanks + word])
            }
        }
    }

    /// Turns a scanning failure into the error reported to the caller, counting
    /// lines up to the failure.
    pub fn error(&self, fail: Fail) -> ParseError {
        let pos = fail.pos.min(self.b.len());
        let before = &self.b[..pos];
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        ParseError {
            line,
            column: pos - line_start + 1,
            message: fail.message,
        }
    }
}

/// Quotes bytes for an error message like Go's `%q`: printable text as is,
/// control characters and invalid UTF-8 escaped, cut at [`EXCERPT_BYTES_MAX`].
pub(crate) fn quote_bytes(b: &[u8]) -> String {
    let (b, cut) = if b.len() > EXCERPT_BYTES_MAX {
        (&b[..EXCERPT_BYTES_MAX], true)
    } else {
        (b, false)
    };
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    if cut {
        out.push('…');
    }
    out
}

/// Undoes the escapes Prometheus recognises: `\\` and `\n`, plus `\"` when `quote`
/// is set. Any other backslash is kept literally, as Prometheus's replacer does.
pub(crate) fn unescape_into(raw: &str, quote: bool, out: &mut String) {
    let bytes = raw.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let replacement = match bytes.get(i + 1) {
            Some(b'\\') => '\\',
            Some(b'n') => '\n',
            Some(b'"') if quote => '"',
            _ => {
                i += 1;
                continue;
            }
        };
        // Both bytes are ASCII, so the slice ends on a character boundary.
        out.push_str(&raw[run_start..i]);
        out.push(replacement);
        i += 2;
        run_start = i;
    }
    out.push_str(&raw[run_start..]);
}

/// `raw` with escapes undone, borrowing when there is nothing to undo.
pub(crate) fn unescape(raw: &str, quote: bool) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    unescape_into(raw, quote, &mut out);
    Cow::Owned(out)
}

/// The first eight bytes of a label name as a big-endian integer, zero-padded.
/// Keys order like the names themselves as far as they go, so sorting compares
/// integers and only looks at whole names when two keys tie.
fn sort_key(name: &[u8]) -> u64 {
    let mut key = [0u8; 8];
    let n = name.len().min(8);
    key[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(key)
}

/// Syntax differences between the two formats inside `{...}`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabelSyntax {
    /// OpenMetrics: no whitespace anywhere, a `,` or `}` must follow each value,
    /// and label values may not contain a raw newline.
    pub openmetrics: bool,
    /// An exemplar's label set, which cannot name a metric.
    pub exemplar: bool,
}

/// Reusable space for assembling one label set without allocating per sample:
/// the pairs found so far and the text that had to be rewritten.
#[derive(Default)]
pub(crate) struct LabelScratch {
    /// Each label as (sort key, name, value); see [`sort_key`].
    pairs: Vec<(u64, Piece, Piece)>,
    buf: String,
}

impl LabelScratch {
    pub fn clear(&mut self) {
        self.pairs.clear();
        self.buf.clear();
    }

    #[inline]
    fn bytes<'s>(&'s self, lex: &Lexer<'s>, p: Piece) -> &'s [u8] {
        match p {
            Piece::Body { start, end } => lex.b.get(start..end).unwrap_or(&[]),
            Piece::Scratch { start, end } => self.buf.as_bytes().get(start..end).unwrap_or(&[]),
            Piece::MetricNameLabel => METRIC_NAME.as_bytes(),
        }
    }

    #[inline]
    fn text<'s>(&'s self, lex: &Lexer<'s>, p: Piece) -> &'s str {
        // Every piece was checked to be valid UTF-8 when it was scanned, so the
        // fallback is unreachable; it exists so that a bug cannot become a panic.
        match p {
            Piece::Body { start, end } => lex.str_at(start, end).unwrap_or(""),
            Piece::Scratch { start, end } => self.buf.get(start..end).unwrap_or(""),
            Piece::MetricNameLabel => METRIC_NAME,
        }
    }

    /// Turns the quoted string at `start..end` into a piece: checked for UTF-8,
    /// unescaped into the scratch buffer if it has escapes.
    #[inline]
    fn quoted_piece(
        &mut self,
        lex: &Lexer<'_>,
        (start, end, escaped): (usize, usize, bool),
        what: &str,
    ) -> Scan<Piece> {
        let Some(raw) = lex.str_at(start, end) else {
            return Err(lex.fail_plain(
                start - 1,
                format!(
                    "invalid UTF-8 in {what} {}",
                    quote_bytes(&lex.b[start - 1..=end])
                ),
            ));
        };
        if !escaped {
            return Ok(Piece::Body { start, end });
        }
        let s = self.buf.len();
        unescape_into(raw, true, &mut self.buf);
        Ok(Piece::Scratch {
            start: s,
            end: self.buf.len(),
        })
    }

    /// Adds one label, rewriting the value of `le` (histograms) or `quantile`
    /// (summaries) into its canonical float spelling as Prometheus 3 does.
    #[inline]
    fn push(
        &mut self,
        lex: &Lexer<'_>,
        name: Piece,
        value: Piece,
        kind: MetricType,
        at: usize,
    ) -> Scan<()> {
        if self.pairs.len() >= LABELS_PER_SERIES_MAX {
            return Err(lex.fail_plain(at, format!("more than {LABELS_PER_SERIES_MAX} labels")));
        }
        let mut value = value;
        let normalized_name = match kind {
            MetricType::Histogram => "le",
            MetricType::Summary => "quantile",
            _ => "",
        };
        if !normalized_name.is_empty() && self.bytes(lex, name) == normalized_name.as_bytes() {
            // Normalising appends to the buffer the value may live in, so a value
            // already there is copied out first (only escaped values are).
            let raw: Cow<'_, str> = match value {
                Piece::Body { start, end } => Cow::Borrowed(lex.str_at(start, end).unwrap_or("")),
                _ => Cow::Owned(self.text(lex, value).to_string()),
            };
            let s = self.buf.len();
            if normalize_float_label(&raw, &mut self.buf) {
                value = Piece::Scratch {
                    start: s,
                    end: self.buf.len(),
                };
            }
        }
        let key = sort_key(self.bytes(lex, name));
        self.pairs.push((key, name, value));
        Ok(())
    }

    /// Parses `{...}` with the cursor on the `{`, adding each label. Returns the
    /// metric name if the set names one (`{"my.metric", a="b"}`).
    pub fn parse_label_set(
        &mut self,
        lex: &mut Lexer<'_>,
        syntax: LabelSyntax,
        kind: MetricType,
    ) -> Scan<Option<Piece>> {
        let om = syntax.openmetrics;
        let mut metric_name = None;
        lex.pos += 1;
        loop {
            if !om {
                lex.skip_blanks();
            }
            let name_at = lex.pos;
            let (name, quoted) = match lex.peek() {
                Some(b'}') => {
                    lex.pos += 1;
                    return Ok(metric_name);
                }
                Some(c) if is_label_start(c) => {
                    let start = lex.take_while(is_label_char);
                    (
                        Piece::Body {
                            start,
                            end: lex.pos,
                        },
                        false,
                    )
                }
                Some(b'"') => {
                    let span = lex.quoted(true, "label name")?;
                    (self.quoted_piece(lex, span, "label name")?, true)
                }
                _ => return Err(lex.fail(name_at, "expected label name or '}'")),
            };
            if !om {
                lex.skip_blanks();
            }
            if quoted && matches!(lex.peek(), Some(b',' | b'}')) {
                // A lone quoted string is the metric name (UTF-8 names).
                if syntax.exemplar {
                    return Err(lex.fail(lex.pos, "expected '=' after exemplar label name"));
                }
                if metric_name.is_some() {
                    return Err(lex.fail_plain(name_at, "metric name given twice".to_string()));
                }
                if self.bytes(lex, name).is_empty() {
                    return Err(lex.fail_plain(name_at, "empty metric name".to_string()));
                }
                lex.check_legacy(name_at, self.text(lex, name), true)?;
                metric_name = Some(name);
                if lex.peek() == Some(b',') {
                    lex.pos += 1;
                }
                continue;
            }
            let name_len = self.bytes(lex, name).len();
            if name_len == 0 {
                return Err(lex.fail_plain(name_at, "empty label name".to_string()));
            }
            if quoted {
                lex.check_legacy(name_at, self.text(lex, name), false)?;
            }
            if name_len > LABEL_STRING_LEN_MAX {
                return Err(lex.fail_plain(
                    name_at,
                    format!("label name longer than {LABEL_STRING_LEN_MAX} bytes"),
                ));
            }
            if lex.peek() != Some(b'=') {
                return Err(lex.fail(lex.pos, "expected '=' after label name"));
            }
            lex.pos += 1;
            if !om {
                lex.skip_blanks();
            }
            if lex.peek() != Some(b'"') {
                return Err(lex.fail(lex.pos, "expected label value in quotes"));
            }
            let value_at = lex.pos;
            let span = lex.quoted(!om, "label value")?;
            let value = self.quoted_piece(lex, span, "label value")?;
            if self.bytes(lex, value).len() > LABEL_STRING_LEN_MAX {
                return Err(lex.fail_plain(
                    value_at,
                    format!("label value longer than {LABEL_STRING_LEN_MAX} bytes"),
                ));
            }
            self.push(lex, name, value, kind, name_at)?;
            if om {
                match lex.peek() {
                    Some(b',') => lex.pos += 1,
                    Some(b'}') => {}
                    _ => return Err(lex.fail(lex.pos, "expected ',' or '}' after label value")),
                }
            } else {
                lex.skip_blanks();
                if lex.peek() == Some(b',') {
                    lex.pos += 1;
                }
            }
        }
    }

    /// Adds the metric name as the `__name__` label.
    pub fn push_metric_name(&mut self, lex: &Lexer<'_>, name: Piece, at: usize) -> Scan<()> {
        if self.bytes(lex, name).len() > LABEL_STRING_LEN_MAX {
            return Err(lex.fail_plain(
                at,
                format!("metric name longer than {LABEL_STRING_LEN_MAX} bytes"),
            ));
        }
        self.push(lex, Piece::MetricNameLabel, name, MetricType::Unknown, at)
    }

    /// Sorts the labels, rejects repeated names, and builds the label set.
    /// Labels with empty values are dropped: in Prometheus they mean "absent".
    pub fn build(&mut self, lex: &Lexer<'_>, at: usize) -> Scan<Labels> {
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.bytes(lex, a.1).cmp(self.bytes(lex, b.1)))
        });
        let duplicate = pairs
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && self.bytes(lex, w[0].1) == self.bytes(lex, w[1].1));
        let result = match duplicate {
            Some(w) => Err(lex.fail_plain(
                at,
                format!(
                    "duplicate label name {}",
                    quote_bytes(self.bytes(lex, w[0].1))
                ),
            )),
            None => Ok(Labels::from_sorted(pairs.iter().filter_map(
                |&(_, n, v)| {
                    let value = self.text(lex, v);
                    (!value.is_empty()).then(|| Label {
                        name: self.text(lex, n),
                        value,
                    })
                },
            ))),
        };
        self.pairs = pairs;
        result
    }
}

const BYTES_01: u64 = 0x0101_0101_0101_0101;
const BYTES_80: u64 = 0x8080_8080_8080_8080;

/// A word with the high bit set in (at least) the lowest zero byte of `v`, and in
/// no byte below it: bytes above the first zero may be marked falsely, which only
/// the lowest mark's position is read for.
#[inline]
fn zero_byte_marks(v: u64) -> u64 {
    v.wrapping_sub(BYTES_01) & !v & BYTES_80
}

/// Index of the first `"`, `\\`, newline or `}` at or after `from`, eight bytes at
/// a time: label sets are skipped for every sample of a known series, and a byte
/// loop spent most of its time on the bytes in between.
#[inline]
fn find_label_set_byte(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let marks = zero_byte_marks(x ^ (BYTES_01 * u64::from(b'"')))
            | zero_byte_marks(x ^ (BYTES_01 * u64::from(b'\\')))
            | zero_byte_marks(x ^ (BYTES_01 * u64::from(b'\n')))
            | zero_byte_marks(x ^ (BYTES_01 * u64::from(b'}')));
        if marks != 0 {
            return Some(i + (marks.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|c| matches!(c, b'"' | b'\\' | b'\n' | b'}'))
        .map(|p| i + p)
}

#[cfg(test)]
mod skip_tests {
    use super::*;

    /// The byte-at-a-time search `find_label_set_byte` replaces.
    fn find_slowly(b: &[u8], from: usize) -> Option<usize> {
        (from..b.len()).find(|&i| matches!(b[i], b'"' | b'\\' | b'\n' | b'}'))
    }

    proptest::proptest! {
        #[test]
        fn finds_what_a_byte_loop_finds(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'a', b'=', b',', b'"', b'\\', b'\n', b'}', 0x80, 0xff, 0x01, 0x7d, 0x5c]), 0..40),
            from in 0usize..41,
        ) {
            let from = from.min(bytes.len());
            proptest::prop_assert_eq!(find_label_set_byte(&bytes, from), find_slowly(&bytes, from));
        }
    }
}
