//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's semantics.
//!
//! Regexes are fully anchored and `.` matches a newline, as in Prometheus 3. A label
//! that a series lacks has the value "" for matching, so `{a=""}` selects the series
//! without `a` and `{a=~".*"}` selects every series.

use regex::Regex;
use std::fmt;

/// The four kinds of label matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl fmt::Display for MatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regexp => "=~",
            MatchType::NotRegexp => "!~",
        })
    }
}

/// A matcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid regular expression {pattern:?} for label {name:?}: {reason}")]
    BadRegex {
        name: String,
        pattern: String,
        reason: String,
    },
}

/// How a regex matcher decides, chosen once at construction so that the common
/// shapes (`foo`, `a|b|c`, `.*`, `.+`, `foo.*`) never run the regex engine.
#[derive(Debug, Clone)]
enum Fast {
    /// The pattern has no metacharacters: plain equality.
    Literal(String),
    /// An alternation of literals: membership in a sorted set.
    Set(Vec<String>),
    /// `.*`: everything matches.
    Any,
    /// `.+`: anything non-empty matches.
    NonEmpty,
    /// A literal followed by `.*` (`p1.*`): a prefix test.
    Prefix(String),
    /// Anything else goes to the compiled regex.
    Regex(Regex),
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub kind: MatchType,
    pub value: String,
    fast: Option<Fast>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.name == other.name && self.kind == other.kind && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher; regex kinds compile `value` anchored at both ends.
    pub fn new(kind: MatchType, name: &str, value: &str) -> Result<Matcher, MatcherError> {
        let fast = match kind {
            MatchType::Equal | MatchType::NotEqual => None,
            MatchType::Regexp | MatchType::NotRegexp => Some(compile(name, value)?),
        };
        Ok(Matcher {
            name: name.to_string(),
            kind,
            value: value.to_string(),
            fast,
        })
    }

    /// Shorthand for an equality matcher, which cannot fail.
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            kind: MatchType::Equal,
            value: value.to_string(),
            fast: None,
        }
    }

    /// Whether `value` (the series' value of `self.name`, "" when absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.kind {
            MatchType::Equal => value == self.value,
            MatchType::NotEqual => value != self.value,
            MatchType::Regexp => self.regex_matches(value),
            MatchType::NotRegexp => !self.regex_matches(value),
        }
    }

    fn regex_matches(&self, value: &str) -> bool {
        match &self.fast {
            Some(Fast::Literal(s)) => value == s,
            Some(Fast::Set(set)) => set.binary_search_by(|s| s.as_str().cmp(value)).is_ok(),
            Some(Fast::Any) => true,
            Some(Fast::NonEmpty) => !value.is_empty(),
            Some(Fast::Prefix(p)) => value.starts_with(p.as_str()),
            Some(Fast::Regex(re)) => re.is_match(value),
            None => unreachable!("regex matcher built without a compiled pattern"),
        }
    }

    /// Whether this matcher accepts the empty string, i.e. also selects series that
    /// lack the label. Index lookups treat such matchers differently.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=` and for regexes that are a literal or a set of literals, the exact
    /// values that match; `None` when the set is open-ended.
    pub fn set_matches(&self) -> Option<Vec<&str>> {
        match (&self.kind, &self.fast) {
            (MatchType::Equal, _) => Some(vec![self.value.as_str()]),
            (MatchType::Regexp, Some(Fast::Literal(s))) => Some(vec![s.as_str()]),
            (MatchType::Regexp, Some(Fast::Set(set))) => {
                Some(set.iter().map(|s| s.as_str()).collect())
            }
            _ => None,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.kind, super::quote(&self.value))
    }
}

fn compile(name: &str, pattern: &str) -> Result<Fast, MatcherError> {
    // Patterns made of plain characters, alternations of them and a trailing
    // `.*` are valid by construction: they skip compiling a regex, which costs
    // more than the rest of a small query. Anything else is compiled, so invalid
    // patterns are rejected with the engine's own message.
    let is_plain = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || "_-:/ ,=@".contains(c))
    };
    if pattern == ".*" {
        return Ok(Fast::Any);
    }
    if pattern == ".+" {
        return Ok(Fast::NonEmpty);
    }
    if is_plain(pattern) {
        return Ok(Fast::Literal(pattern.to_string()));
    }
    if let Some(prefix) = pattern.strip_suffix(".*").filter(|p| is_plain(p)) {
        return Ok(Fast::Prefix(prefix.to_string()));
    }
    if pattern.contains('|') && pattern.split('|').all(is_plain) {
        let mut set: Vec<String> = pattern.split('|').map(str::to_string).collect();
        set.sort();
        set.dedup();
        return Ok(Fast::Set(set));
    }
    let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| MatcherError::BadRegex {
        name: name.to_string(),
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Fast::Regex(re))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MatchType, v: &str) -> Matcher {
        Matcher::new(kind, "l", v).unwrap()
    }

    #[test]
    fn regexes_are_anchored_and_dot_matches_newline() {
        let r = m(MatchType::Regexp, "fo.");
        assert!(r.matches("foo"));
        assert!(!r.matches("xfoo"));
        assert!(!r.matches("food"));
        assert!(r.matches("fo\n"));
        assert!(m(MatchType::Regexp, "a.*b").matches("a\n\nb"));
    }

    #[test]
    fn empty_value_semantics() {
        assert!(m(MatchType::Equal, "").matches(""));
        assert!(!m(MatchType::NotEqual, "").matches(""));
        assert!(m(MatchType::Regexp, ".*").matches_empty());
        assert!(!m(MatchType::Regexp, ".+").matches_empty());
        assert!(m(MatchType::NotRegexp, "a").matches_empty());
        assert!(m(MatchType::Regexp, "a|").matches_empty());
    }

    #[test]
    fn fast_paths_agree_with_the_regex() {
        let pats = [
            "abc", "a|b|c", ".*", ".+", "a|", "x.y", "(a|b)c", "a-b:c", "a.*", "ab.*", ".*.*",
        ];
        let vals = [
            "", "a", "b", "c", "abc", "x y", "xzy", "ac", "bc", "a-b:c", "\n", "ab\nc",
        ];
        for p in pats {
            let re = Regex::new(&format!("^(?s:{p})$")).unwrap();
            let mm = m(MatchType::Regexp, p);
            let nm = m(MatchType::NotRegexp, p);
            for v in vals {
                assert_eq!(mm.matches(v), re.is_match(v), "{p} vs {v:?}");
                assert_eq!(nm.matches(v), !re.is_match(v), "!{p} vs {v:?}");
            }
        }
    }

    #[test]
    fn set_matches() {
        assert_eq!(
            m(MatchType::Regexp, "b|a").set_matches(),
            Some(vec!["a", "b"])
        );
        assert_eq!(m(MatchType::Regexp, "a.*").set_matches(), None);
        assert_eq!(m(MatchType::Equal, "x").set_matches(), Some(vec!["x"]));
    }

    #[test]
    fn bad_regex_names_label_and_pattern() {
        let err = Matcher::new(MatchType::Regexp, "job", "(").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("job") && msg.contains("\"(\""), "{msg}");
    }
}
