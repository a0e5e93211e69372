//! Series selectors as `match[]` parameters and `--match` flags write them:
//! `metric{label="value", other=~"re"}`, without the rest of PromQL.

use super::{MatchType, Matcher};

/// A selector could not be parsed; the message quotes it and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

/// Parses a series selector (`match[]`, `--match`) such as `{job="a"}` or `up{job=~"a.*"}` into matchers.
pub fn parse_selector(sel: &str) -> Result<Vec<Matcher>, SelectorError> {
    let bad = |why: &str| SelectorError(format!("invalid series selector {sel:?}: {why}"));
    let sel = sel.trim();
    let (name, rest) = match sel.find('{') {
        Some(i) => (sel[..i].trim(), &sel[i..]),
        None => (sel, ""),
    };
    let mut out = Vec::new();
    if !name.is_empty() {
        out.push(Matcher::equal("__name__", name));
    }
    let mut s = if rest.is_empty() {
        ""
    } else {
        rest.strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| bad("unbalanced braces"))?
    };
    loop {
        s = s.trim_start();
        if s.is_empty() {
            break;
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let lname = &s[..end];
        if lname.is_empty() {
            return Err(bad("expected a label name"));
        }
        s = s[end..].trim_start();
        let (op, len) = if s.starts_with("=~") {
            (MatchType::Regexp, 2)
        } else if s.starts_with("!~") {
            (MatchType::NotRegexp, 2)
        } else if s.starts_with("!=") {
            (MatchType::NotEqual, 2)
        } else if s.starts_with('=') {
            (MatchType::Equal, 1)
        } else {
            return Err(bad("expected a match operator"));
        };
        s = s[len..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| bad("expected a quoted value"))?;
        let mut value = String::new();
        let mut close = None;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                close = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let close = close.ok_or_else(|| bad("unterminated string"))?;
        out.push(Matcher::new(op, lname, &value).map_err(|e| bad(&e.to_string()))?);
        s = s[close + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.is_empty() {
            return Err(bad("expected ',' or '}'"));
        }
    }
    if out.is_empty() {
        return Err(bad("no matchers"));
    }
    Ok(out)
}
