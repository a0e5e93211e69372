//! A pre-pass over the query text for Prometheus 3 syntax that `promql-parser` 0.11
//! does not know, rewritten into forms it does know:
//!
//! - duration expressions in ranges, subquery steps and offsets (`foo[5m+1m]`,
//!   `[29s+1s:5s*2]`, `offset (2 * 2)`, `offset -step()*2`), with `step()`, `range()`,
//!   `min_of(a, b)` and `max_of(a, b)`: evaluated here (Prometheus's rules: plain
//!   numbers are seconds, the result is truncated to milliseconds) and written back
//!   as `<n>ms`;
//! - the `anchored` and `smoothed` modifiers: removed from the text and recorded on
//!   the selector they follow as a marker matcher (`MODIFIER_LABEL`), which the
//!   evaluator reads and never passes to storage. After a subquery or any other
//!   expression they are refused with Prometheus's messages;
//! - the `@` modifier's argument is checked as Prometheus 3 reads it: a signed
//!   number or duration (`@ 1m` is `@ 60`), `start()` or `end()`; anything else
//!   (`@ (1 + 2)`, `@ step()`: Prometheus has no duration expressions there) is
//!   refused with its "unexpected … in @, expected timestamp".
//!
//! `step()` and `range()` depend on the query, so a query that uses them is
//! rewritten again (and parsed again) when it runs.

/// The label name of the marker matcher that carries `anchored`/`smoothed`.
pub(crate) const MODIFIER_LABEL: &str = "__hearth_range_modifier__";

/// A marker matcher added to the label selector `info()` takes as its second
/// argument: Prometheus accepts selectors there that match the empty string
/// (`{data=~".*"}`), which `promql-parser` rejects as a vector selector.
pub(crate) const INFO_SELECTOR_LABEL: &str = "__hearth_info_selector__";

/// Whether a matcher is one of the pre-pass's markers, never a real label.
pub(crate) fn is_marker(name: &str) -> bool {
    name == MODIFIER_LABEL || name == INFO_SELECTOR_LABEL
}

/// The query parameters duration expressions may refer to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DurationParams {
    pub step_ms: i64,
    pub range_ms: i64,
}

/// The rewritten text, and whether it depends on `DurationParams`.
#[derive(Debug)]
pub(crate) struct Rewritten {
    pub text: String,
    pub uses_params: bool,
}

/// Rewrites `q`; an error names the duration expression that cannot be evaluated.
pub(crate) fn rewrite(q: &str, params: DurationParams) -> Result<Rewritten, String> {
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len() + 16);
    let mut uses_params = false;
    // What the text so far ends with, for an `anchored`/`smoothed` that follows.
    let mut tail = Tail::Nothing;
    // Input offsets of `{` that open an `info()` label selector.
    let mut info_selectors: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let end = skip_string(b, i);
                out.push_str(&q[i..end]);
                i = end;
                tail = Tail::Other;
            }
            b'#' => {
                let end = q[i..].find('\n').map(|n| i + n).unwrap_or(b.len());
                out.push_str(&q[i..end]);
                i = end;
            }
            b'[' => {
                let Some(close) = q[i..].find(']').map(|n| i + n) else {
                    out.push_str(&q[i..]);
                    break;
                };
                out.push('[');
                let inner = &q[i + 1..close];
                if inner.contains(':') {
                    tail = Tail::Subquery;
                }
                let mut parts = Vec::new();
                for (k, part) in inner.split(':').enumerate() {
                    // Only the range and the step are duration expressions.
                    if k > 1 {
                        parts.push(part.to_string());
                        continue;
                    }
                    let trimmed = part.trim();
                    if trimmed.is_empty() || is_literal(trimmed) {
                        parts.push(part.to_string());
                        continue;
                    }
                    let mut p = DurParser::new(trimmed, params);
                    match p.full() {
                        Ok(v) => {
                            uses_params |= p.used_params;
                            parts.push(format_ms(seconds_to_ms(v, trimmed)?));
                        }
                        // Division by zero and the like are errors of their own; any
                        // other text is left for the parser to report.
                        Err(e) if e.contains(" by zero") => return Err(e),
                        Err(_) => parts.push(part.to_string()),
                    }
                }
                out.push_str(&parts.join(":"));
                out.push(']');
                i = close + 1;
            }
            b'{' => {
                // Matchers are copied whole: nothing inside them is rewritten.
                let close = matching_brace(b, i);
                out.push('{');
                let empty = q[i + 1..close].trim().is_empty();
                if info_selectors.contains(&i) {
                    out.push_str(INFO_SELECTOR_LABEL);
                    out.push_str(if empty { "=\"1\"" } else { "=\"1\"," });
                }
                tail = Tail::Selector {
                    pos: out.len(),
                    comma: !empty,
                    modifier: None,
                };
                let end = (close + 1).min(b.len());
                out.push_str(&q[i + 1..end]);
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &q[start..i];
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(b, i);
                match lower.as_str() {
                    "offset" => {
                        out.push_str(word);
                        let j = next.unwrap_or(b.len());
                        let mut p = DurParser::new(&q[j..], params);
                        let lit_end = literal_offset_end(&q[j..]);
                        match lit_end {
                            Some(n) => {
                                out.push_str(&q[i..j + n]);
                                i = j + n;
                            }
                            None => {
                                // Not a duration expression either: left to the parser.
                                if let Ok(v) = p.signed_primary() {
                                    uses_params |= p.used_params;
                                    let ms = seconds_to_ms(v, q[j..j + p.pos].trim())?;
                                    if ms == 0 {
                                        // `offset 0` is no offset (the parser rejects `0ms`).
                                        out.truncate(out.len() - word.len());
                                    } else {
                                        out.push(' ');
                                        if ms < 0 {
                                            out.push('-');
                                        }
                                        out.push_str(&format_ms(ms.saturating_abs()));
                                    }
                                    i = j + p.pos;
                                }
                            }
                        }
                    }
                    "anchored" | "smoothed" if tail != Tail::Nothing => {
                        let modifier = if lower == "anchored" {
                            "anchored"
                        } else {
                            "smoothed"
                        };
                        match &mut tail {
                            Tail::Selector {
                                pos,
                                comma,
                                modifier: set,
                            } => match set {
                                None => {
                                    let m = format!("{MODIFIER_LABEL}=\"{modifier}\"");
                                    let ins = if *pos > 0 && out.as_bytes()[*pos - 1] == b'{' {
                                        if *comma {
                                            format!("{m},")
                                        } else {
                                            m
                                        }
                                    } else {
                                        format!("{{{m}}}")
                                    };
                                    out.insert_str(*pos, &ins);
                                    *set = Some(modifier);
                                }
                                Some(prev) if *prev != modifier => {
                                    return Err(
                                        "anchored and smoothed modifiers cannot be used together"
                                            .into(),
                                    );
                                }
                                Some(_) => {}
                            },
                            Tail::Subquery => {
                                return Err(format!(
                                    "{modifier} modifier is not supported for subqueries"
                                ));
                            }
                            // `Tail::Nothing` is left out by the guard: the word is a
                            // metric name there.
                            Tail::Other | Tail::Nothing => {
                                return Err(format!("{modifier} modifier not implemented"));
                            }
                        }
                    }
                    _ => {
                        out.push_str(word);
                        let is_call = next.is_some_and(|j| b[j] == b'(');
                        if is_call && lower == "info" {
                            if let Some(j) = next {
                                let args = super::positions::arg_starts(b, j);
                                if let Some(&a) = args.get(1) {
                                    if b.get(a) == Some(&b'{') {
                                        info_selectors.push(a);
                                    }
                                }
                            }
                        }
                        if is_call {
                            tail = Tail::Nothing;
                        } else if lower == "inf" || lower == "nan" {
                            tail = Tail::Other;
                        } else if !is_keyword(&lower) {
                            tail = Tail::Selector {
                                pos: out.len(),
                                comma: false,
                                modifier: None,
                            };
                        } else {
                            tail = Tail::Nothing;
                        }
                    }
                }
            }
            b'@' => {
                out.push('@');
                i = at_modifier(q, i + 1, &mut out)?;
            }
            b')' => {
                out.push(')');
                i += 1;
                tail = Tail::Other;
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                // A number literal: copied whole.
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push_str(&q[start..i]);
                tail = Tail::Other;
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    // An operator, `(`, `,` and the like: what follows starts anew.
                    tail = Tail::Nothing;
                }
                out.push(c as char);
                // Keep multi-byte characters whole.
                if !c.is_ascii() {
                    out.pop();
                    let ch = q[i..].chars().next().unwrap_or(' ');
                    out.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
                i += 1;
            }
        }
    }
    Ok(Rewritten {
        text: out,
        uses_params,
    })
}

/// What the rewritten text ends with, as far as an `anchored` or `smoothed` keyword
/// after it is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tail {
    /// Nothing a modifier could follow (the start, an operator, `(`, `,`): the word
    /// is a metric name there.
    Nothing,
    /// A vector or range selector, with its `offset`/`@` if any: the marker matcher
    /// goes at output position `pos` (inside its braces when `pos` follows `{`, with
    /// a comma after it when they hold matchers), once.
    Selector {
        pos: usize,
        comma: bool,
        modifier: Option<&'static str>,
    },
    /// A subquery (`x[5m:1m]`), which Prometheus refuses modifiers on.
    Subquery,
    /// Any other expression (a call, an aggregation, parentheses, a literal).
    Other,
}

/// Copies the argument of the `@` modifier that starts at input offset `i` (just
/// after the `@`) and returns the offset after it. Prometheus 3 takes a signed
/// number or duration there, or `start()`/`end()`: a duration is written back in
/// seconds (`promql-parser` reads only numbers there), and anything else is
/// Prometheus's parse error.
fn at_modifier(q: &str, i: usize, out: &mut String) -> Result<usize, String> {
    let b = q.as_bytes();
    let mut j = i;
    let mut sign = "";
    loop {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        match b.get(j) {
            Some(b'-') if sign.is_empty() => sign = "-",
            Some(b'+') if sign.is_empty() => sign = "+",
            _ => break,
        }
        j += 1;
    }
    let start = j;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == b'_') {
        j += 1;
    }
    let word = &q[start..j];
    let lower = word.to_ascii_lowercase();
    let unexpected = |what: String| {
        Err(format!(
            "{} parse error: unexpected {what} in @, expected timestamp",
            go_position(q, start)
        ))
    };
    if word.is_empty() {
        return match q[start..].chars().next() {
            None => unexpected("end of input".into()),
            Some(c) => unexpected(format!("{:?}", c.to_string())),
        };
    }
    if sign.is_empty() && (lower == "start" || lower == "end") {
        // `start()` / `end()`: copied; the parser checks the parentheses.
        if let Some(open) = next_non_space(b, j).filter(|&k| b[k] == b'(') {
            if let Some(close) = next_non_space(b, open + 1).filter(|&k| b[k] == b')') {
                j = close + 1;
            }
        }
        out.push_str(&q[i..j]);
        return Ok(j);
    }
    if !(b[start].is_ascii_digit() || b[start] == b'.' || lower == "inf" || lower == "nan") {
        // Prometheus names keywords by themselves and other words as identifiers.
        return unexpected(match lower.as_str() {
            "step" | "range" | "start" | "end" => format!("{word:?}"),
            _ => format!("identifier {word:?}"),
        });
    }
    if is_literal(word) && word.parse::<f64>().is_err() && !word.starts_with("0x") {
        // A duration (`1m30s`): seconds, as Prometheus 3 reads it.
        match parse_number_or_duration(word) {
            Some(v) => {
                out.push(' ');
                out.push_str(sign);
                out.push_str(&format!("{v}"));
                return Ok(j);
            }
            None => {
                return Err(format!(
                    "{} parse error: bad number or duration syntax: {word:?}",
                    go_position(q, start)
                ))
            }
        }
    }
    out.push_str(&q[i..j]);
    Ok(j)
}

/// `line:col:` of byte offset `pos` as Prometheus's parse errors print it (1-based,
/// columns in bytes).
fn go_position(q: &str, pos: usize) -> String {
    let before = &q.as_bytes()[..pos.min(q.len())];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |n| n + 1);
    format!("{line}:{}:", pos - line_start + 1)
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "and"
            | "or"
            | "unless"
            | "atan2"
            | "bool"
            | "by"
            | "without"
            | "on"
            | "ignoring"
            | "group_left"
            | "group_right"
            | "offset"
            | "inf"
            | "nan"
            | "start"
            | "end"
    )
}

fn next_non_space(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    (i < b.len()).then_some(i)
}

/// The index just past the string literal starting at `i`.
pub(super) fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' && quote != b'`' {
            j += 2;
            continue;
        }
        if b[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// The index of the `}` closing the `{` at `i` (strings skipped), or the end.
fn matching_brace(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => j = skip_string(b, j),
            b'}' => return j,
            _ => j += 1,
        }
    }
    b.len()
}

/// A single number or duration literal, as the parser reads it itself.
fn is_literal(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    !s.is_empty()
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.')
        && s.as_bytes()[0].is_ascii_digit()
        && !s.eq_ignore_ascii_case("step")
}

/// When `s` (what follows `offset`) starts with a plain (signed) literal that is not
/// followed by something only a duration expression allows, its length.
fn literal_offset_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut j = 0;
    while j < b.len() && (b[j] == b'-' || b[j] == b'+' || b[j].is_ascii_whitespace()) {
        j += 1;
    }
    let start = j;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
        j += 1;
    }
    if j == start || !b[start].is_ascii_digit() {
        return None;
    }
    Some(j)
}

fn seconds_to_ms(v: f64, what: &str) -> Result<i64, String> {
    let ms = (v * 1000.0).trunc();
    if !ms.is_finite() || ms.abs() > i64::MAX as f64 / 1e6 {
        return Err(format!("duration is out of range in {what:?}"));
    }
    Ok(ms as i64)
}

fn format_ms(ms: i64) -> String {
    format!("{ms}ms")
}

/// Recursive-descent evaluator of a duration expression; values are seconds.
struct DurParser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    params: DurationParams,
    used_params: bool,
}

impl<'a> DurParser<'a> {
    fn new(text: &'a str, params: DurationParams) -> DurParser<'a> {
        DurParser {
            s: text.as_bytes(),
            text,
            pos: 0,
            params,
            used_params: false,
        }
    }

    fn err(&self, msg: &str) -> String {
        format!("{msg} in duration expression {:?}", self.text.trim())
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    /// The whole text as one expression.
    fn full(&mut self) -> Result<f64, String> {
        let v = self.add()?;
        if self.peek().is_some() {
            return Err(self.err("unexpected character"));
        }
        Ok(v)
    }

    fn add(&mut self) -> Result<f64, String> {
        let mut v = self.mul()?;
        loop {
            match self.peek() {
                Some(b'+') => {
                    self.pos += 1;
                    v += self.mul()?;
                }
                Some(b'-') => {
                    self.pos += 1;
                    v -= self.mul()?;
                }
                _ => return Ok(v),
            }
        }
    }

    fn mul(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        loop {
            match self.peek() {
                Some(b'*') => {
                    self.pos += 1;
                    v *= self.unary()?;
                }
                Some(b'/') => {
                    self.pos += 1;
                    let r = self.unary()?;
                    if r == 0.0 {
                        return Err(self.err("division by zero"));
                    }
                    v /= r;
                }
                Some(b'%') => {
                    self.pos += 1;
                    let r = self.unary()?;
                    if r == 0.0 {
                        return Err(self.err("modulo by zero"));
                    }
                    v %= r;
                }
                _ => return Ok(v),
            }
        }
    }

    /// A unary sign binds more loosely than `^`: `-2 ^ 2` is -4.
    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                Ok(-self.unary()?)
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.pow(),
        }
    }

    fn pow(&mut self) -> Result<f64, String> {
        let base = self.primary()?;
        if self.peek() == Some(b'^') {
            self.pos += 1;
            let e = self.unary()?;
            return Ok(base.powf(e));
        }
        Ok(base)
    }

    /// What may follow `offset`: a signed primary (no binary operators outside
    /// parentheses).
    fn signed_primary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                Ok(-self.signed_primary()?)
            }
            Some(b'+') => {
                self.pos += 1;
                self.signed_primary()
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let v = self.add()?;
                if self.peek() != Some(b')') {
                    return Err(self.err("missing ')'"));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'.')
                {
                    self.pos += 1;
                }
                let lit = &self.text[start..self.pos];
                parse_number_or_duration(lit).ok_or_else(|| self.err("bad number or duration"))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                let name = self.text[start..self.pos].to_ascii_lowercase();
                if self.peek() != Some(b'(') {
                    return Err(self.err("unexpected identifier"));
                }
                self.pos += 1;
                let v = match name.as_str() {
                    "step" => {
                        self.used_params = true;
                        self.params.step_ms as f64 / 1000.0
                    }
                    "range" => {
                        self.used_params = true;
                        self.params.range_ms as f64 / 1000.0
                    }
                    "min_of" | "max_of" => {
                        let a = self.add()?;
                        if self.peek() != Some(b',') {
                            return Err(self.err("missing ','"));
                        }
                        self.pos += 1;
                        let b = self.add()?;
                        if name == "min_of" {
                            a.min(b)
                        } else {
                            a.max(b)
                        }
                    }
                    _ => return Err(self.err("unknown function")),
                };
                if self.peek() != Some(b')') {
                    return Err(self.err("missing ')'"));
                }
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.err("unexpected end")),
        }
    }
}

/// A number (seconds) or a Prometheus duration like `1h30m` or `500ms`, in seconds.
fn parse_number_or_duration(s: &str) -> Option<f64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = 0.0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let n: f64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return None,
        };
        total += n * unit;
    }
    Some(total)
}

/// A string literal whose escapes (`"\xff"`, `"\377"`) spell bytes that are not
/// UTF-8. Prometheus keeps such strings as they are, and its label-name checks
/// then reject them; `promql-parser` turns each escaped byte into the character
/// with that code, so the evaluator looks the crate's value up here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InvalidUtf8 {
    /// The literal's value as `promql-parser` decodes it.
    pub decoded: String,
    /// The value quoted as Go's `%q` prints it (`"a\xc5z"`), for error messages.
    pub quoted: String,
}

/// The string literals in `q` whose escapes spell invalid UTF-8.
pub(crate) fn invalid_utf8_literals(q: &str) -> Vec<InvalidUtf8> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' => {
                let end = skip_string(b, i);
                let inner = &q[i + 1..end.saturating_sub(1).max(i + 1)];
                if let Some(bad) = decode_bytes(inner) {
                    out.push(bad);
                }
                i = end;
            }
            b'`' => i = skip_string(b, i),
            b'#' => i = q[i..].find('\n').map(|n| i + n).unwrap_or(b.len()),
            _ => i += 1,
        }
    }
    out
}

/// Decodes the escapes of a quoted literal's inside two ways: as bytes (Go's
/// `strconv.Unquote`) and as characters (`promql-parser`); `Some` when the
/// bytes are not UTF-8.
fn decode_bytes(inner: &str) -> Option<InvalidUtf8> {
    if !inner.contains('\\') {
        return None;
    }
    let mut bytes = Vec::new();
    let mut decoded = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            decoded.push(c);
            continue;
        }
        let (j, e) = chars.next()?;
        let (radix, len) = match e {
            'x' => (16, 2),
            '0'..='7' => (8, 3),
            _ => {
                // Other escapes spell characters, as in both decoders.
                let ch = match e {
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\x0b',
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let digits = inner.get(j + 1..j + 1 + n)?;
                        for _ in 0..n {
                            chars.next();
                        }
                        char::from_u32(u32::from_str_radix(digits, 16).ok()?)?
                    }
                    other => other,
                };
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                decoded.push(ch);
                continue;
            }
        };
        let start = if radix == 16 { j + 1 } else { j };
        let digits = inner.get(start..start + len)?;
        let v = u32::from_str_radix(digits, radix).ok()?;
        for _ in 0..(start + len - j - 1) {
            chars.next();
        }
        let byte = u8::try_from(v).ok()?;
        bytes.push(byte);
        decoded.push(char::from(byte));
    }
    if std::str::from_utf8(&bytes).is_ok() {
        return None;
    }
    Some(InvalidUtf8 {
        decoded,
        quoted: go_quote_bytes(&bytes),
    })
}

/// Go's `%q` of a byte string that may not be UTF-8: invalid bytes as `\xNN`.
fn go_quote_bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in b.utf8_chunks() {
        let valid = crate::labels::quote(chunk.valid());
        out.push_str(&valid[1..valid.len() - 1]);
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literals_that_spell_invalid_utf8() {
        let got =
            invalid_utf8_literals(r#"label_replace(x, "\xff", "ok\xc3\xa9", 'a\305z', "\u00ff")"#);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].decoded, "\u{ff}");
        assert_eq!(got[0].quoted, r#""\xff""#);
        assert_eq!(got[1].decoded, "a\u{c5}z");
        assert_eq!(got[1].quoted, r#""a\xc5z""#);
    }

    fn rw(q: &str) -> String {
        rewrite(
            q,
            DurationParams {
                step_ms: 5000,
                range_ms: 10_000,
            },
        )
        .map(|r| r.text)
        .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn durations() {
        assert_eq!(rw("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(rw("x[5m]"), "x[5m]");
        assert_eq!(rw("x[30m1s-30m1s % 1m]"), "x[1800000ms]");
        assert_eq!(rw("x[29s+1s:5s+5s]"), "x[30000ms:10000ms]");
        assert_eq!(rw("x[10m:]"), "x[10m:]");
        assert_eq!(rw("x offset (2 ^ 2)"), "x offset 4000ms");
        assert_eq!(rw("x offset (-2 ^ 2)"), "x offset -4000ms");
        assert_eq!(rw("x offset -2 ^ 2"), "x offset -2 ^ 2");
        assert_eq!(rw("x offset -step()*2"), "x offset -5000ms*2");
        assert_eq!(
            rw("x offset min_of(step(), 1s)+8000"),
            "x offset 1000ms+8000"
        );
        assert_eq!(rw("x[range()]"), "x[10000ms]");
        assert_eq!(rw(r#"x{a="[5m+1m]"}"#), r#"x{a="[5m+1m]"}"#);
    }

    #[test]
    fn modifiers() {
        assert_eq!(
            rw("rate(x[1m] anchored)"),
            format!("rate(x{{{MODIFIER_LABEL}=\"anchored\"}}[1m] )")
        );
        assert_eq!(
            rw(r#"x{a="b"} offset 1m smoothed"#),
            format!("x{{{MODIFIER_LABEL}=\"smoothed\",a=\"b\"}} offset 1m ")
        );
    }

    #[test]
    fn modifiers_after_other_expressions_are_refused() {
        assert_eq!(
            rw("x[5m:1m] anchored"),
            "error: anchored modifier is not supported for subqueries"
        );
        assert_eq!(
            rw("rate(x[1m])[5m:1m] offset 1m smoothed"),
            "error: smoothed modifier is not supported for subqueries"
        );
        assert_eq!(
            rw("sum(x) anchored"),
            "error: anchored modifier not implemented"
        );
        assert_eq!(
            rw("(x[5m]) smoothed"),
            "error: smoothed modifier not implemented"
        );
        assert_eq!(
            rw("x[5m] anchored smoothed"),
            "error: anchored and smoothed modifiers cannot be used together"
        );
        // The same modifier twice is accepted, as in Prometheus.
        assert_eq!(
            rw("x anchored anchored"),
            format!("x{{{MODIFIER_LABEL}=\"anchored\"}}  ")
        );
        // After `@ start()` and `offset` the selector still takes one.
        assert_eq!(
            rw("x[5m] @ start() offset 1m anchored"),
            format!("x{{{MODIFIER_LABEL}=\"anchored\"}}[5m] @ start() offset 1m ")
        );
        // Where no expression ends, the word is a metric name.
        assert_eq!(rw("anchored + 1"), "anchored + 1");
    }

    #[test]
    fn at_modifier_arguments() {
        assert_eq!(rw("x @ 100"), "x @ 100");
        assert_eq!(rw("x @ -1.5e3"), "x @ -1.5e3");
        assert_eq!(rw("x @ 1m30s"), "x @ 90");
        assert_eq!(rw("x[5m] @ -1m"), "x[5m] @ -60");
        assert_eq!(rw("x @ end ( )"), "x @ end ( )");
        assert_eq!(
            rw("x @ (1 + 2)"),
            "error: 1:5: parse error: unexpected \"(\" in @, expected timestamp"
        );
        assert_eq!(
            rw("x @ step()"),
            "error: 1:5: parse error: unexpected \"step\" in @, expected timestamp"
        );
        assert_eq!(
            rw("x @ foo"),
            "error: 1:5: parse error: unexpected identifier \"foo\" in @, expected timestamp"
        );
        assert_eq!(
            rw("sum(x)\n @"),
            "error: 2:3: parse error: unexpected end of input in @, expected timestamp"
        );
        assert_eq!(rw(r#"x{a="@ (1)"}"#), r#"x{a="@ (1)"}"#);
    }
}
