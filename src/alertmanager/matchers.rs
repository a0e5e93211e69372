//! Alertmanager's matcher syntax (`a="b"`, `a=~"x.*"`, `{a!=b, c!~"d"}`), parsed as
//! Alertmanager's classic parser (`pkg/labels/parse.go`) accepts it.
//!
//! Alertmanager matches regexes anchored at both ends, like Prometheus; the
//! resulting `labels::Matcher` is the crate's own.

use crate::labels::{Labels, MatchType, Matcher};
use std::fmt::Write as _;

/// A matcher string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("bad matcher format: {0}")]
    BadFormat(String),
    #[error("matcher value contains unescaped double quote: {0}")]
    UnescapedQuote(String),
    #[error("{0}")]
    BadRegex(String),
    #[error("matcher string is too long ({0} bytes, at most {MATCHERS_LEN_MAX})")]
    TooLong(usize),
}

/// Longest matcher string accepted, in bytes; a limit against abusive input.
pub const MATCHERS_LEN_MAX: usize = 64 * 1024;

/// Parses a comma-separated list of matchers, optionally wrapped in braces.
/// Commas inside double quotes do not split.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, ParseError> {
    if s.len() > MATCHERS_LEN_MAX {
        return Err(ParseError::TooLong(s.len()));
    }
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut in_quotes, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            ',' if !in_quotes => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    in_quotes = !in_quotes;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    let last = token.trim();
    if !last.is_empty() {
        tokens.push(last.to_string());
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses one matcher: `name op value`, where the value may be double-quoted with
/// `\"`, `\\` and `\n` escapes.
pub fn parse_matcher(s: &str) -> Result<Matcher, ParseError> {
    let bad = || ParseError::BadFormat(s.to_string());
    let rest = s.trim_start();
    let name_end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(bad());
    }
    let rest = rest[name_end..].trim_start();
    let (kind, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchType::Regexp, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchType::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchType::NotRegexp, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchType::Equal, r)
    } else {
        return Err(bad());
    };
    let raw_full = rest.trim_start().trim_end();
    let (raw, mut expect_quote) = match raw_full.strip_prefix('"') {
        Some(r) => (r, true),
        None => (raw_full, false),
    };
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    let last = raw.len().saturating_sub(1);
    for (i, c) in raw.char_indices() {
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                _ => {
                    value.push('\\');
                    value.push(c);
                }
            }
            continue;
        }
        match c {
            '\\' if i < last => escaped = true,
            '\\' => value.push('\\'),
            '"' => {
                if !expect_quote || i < last {
                    return Err(ParseError::UnescapedQuote(raw_full.to_string()));
                }
                expect_quote = false;
            }
            _ => value.push(c),
        }
    }
    if expect_quote {
        return Err(ParseError::UnescapedQuote(raw_full.to_string()));
    }
    Matcher::new(kind, name, &value).map_err(|e| ParseError::BadRegex(e.to_string()))
}

/// Whether every matcher accepts `labels` (a missing label has the value "").
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels.get(&m.name)))
}

/// Sorts matchers as Alertmanager does: by name, then operator, then value.
pub fn sort_matchers(ms: &mut [Matcher]) {
    fn rank(k: MatchType) -> u8 {
        match k {
            MatchType::Equal => 0,
            MatchType::NotEqual => 1,
            MatchType::Regexp => 2,
            MatchType::NotRegexp => 3,
        }
    }
    ms.sort_by(|a, b| {
        (a.name.as_str(), rank(a.kind), a.value.as_str()).cmp(&(
            b.name.as_str(),
            rank(b.kind),
            b.value.as_str(),
        ))
    });
}

/// Formats matchers as Alertmanager's `Matchers.String()`: `{a="b",c=~"d"}`.
pub fn matchers_string(ms: &[Matcher]) -> String {
    let mut s = String::from("{");
    for (i, m) in ms.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{m}");
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> (String, MatchType, String) {
        let m = parse_matcher(s).unwrap();
        (m.name.clone(), m.kind, m.value.clone())
    }

    #[test]
    fn parses_quoted_and_unquoted() {
        assert_eq!(one("a=b"), ("a".into(), MatchType::Equal, "b".into()));
        assert_eq!(
            one(r#" a = "b c" "#),
            ("a".into(), MatchType::Equal, "b c".into())
        );
        assert_eq!(
            one(r#"a=~"x.*""#),
            ("a".into(), MatchType::Regexp, "x.*".into())
        );
        assert_eq!(one("a!~x"), ("a".into(), MatchType::NotRegexp, "x".into()));
        assert_eq!(one("a!="), ("a".into(), MatchType::NotEqual, "".into()));
        assert_eq!(one(r#"a="x\"y\\z\n""#).2, "x\"y\\z\n");
        // A spurious escape keeps its backslash; a trailing backslash is literal.
        assert_eq!(one(r#"a=x\d"#).2, "x\\d");
        assert_eq!(one(r"a=x\").2, "x\\");
    }

    #[test]
    fn splits_lists_outside_quotes() {
        let ms = parse_matchers(r#"{foo="bar,baz", job=~"a|b",x!=y}"#).unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].value, "bar,baz");
        assert_eq!(ms[1].kind, MatchType::Regexp);
        assert_eq!(ms[2].name, "x");
        assert!(parse_matchers("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_matchers() {
        assert!(matches!(parse_matcher("=b"), Err(ParseError::BadFormat(_))));
        assert!(matches!(
            parse_matcher("1a=b"),
            Err(ParseError::BadFormat(_))
        ));
        assert!(matches!(
            parse_matcher("a~b"),
            Err(ParseError::BadFormat(_))
        ));
        assert!(matches!(
            parse_matcher(r#"a="b"#),
            Err(ParseError::UnescapedQuote(_))
        ));
        assert!(matches!(
            parse_matcher(r#"a=b"c"#),
            Err(ParseError::UnescapedQuote(_))
        ));
        assert!(matches!(
            parse_matcher(r#"a=~"(""#),
            Err(ParseError::BadRegex(_))
        ));
        assert!(parse_matchers("a=b,,c=d").is_err());
    }

    #[test]
    fn formats_like_alertmanager() {
        let mut ms = parse_matchers(r#"b=~"x",a="1""#).unwrap();
        sort_matchers(&mut ms);
        assert_eq!(matchers_string(&ms), r#"{a="1",b=~"x"}"#);
    }
}
