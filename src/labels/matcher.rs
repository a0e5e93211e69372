//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus's semantics.
//!
//! Regexes are fully anchored and `.` matches a newline, as in Prometheus 3. A label
//! that a series lacks has the value "" for matching, so `{a=""}` selects the series
//! without `a` and `{a=~".*"}` selects every series.

use regex_automata::meta::{self, Regex};
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
        match self.kind {
            MatchType::Equal | MatchType::Regexp => self.literal_values(),
            MatchType::NotEqual | MatchType::NotRegexp => None,
        }
    }

    /// For `!=` and for negated regexes that are a literal or a set of literals,
    /// the exact values that this matcher rejects; `None` when the set is open-ended.
    pub fn rejected_set(&self) -> Option<Vec<&str>> {
        match self.kind {
            MatchType::NotEqual | MatchType::NotRegexp => self.literal_values(),
            MatchType::Equal | MatchType::Regexp => None,
        }
    }

    /// The value, or the regex's literal values, when the pattern is that closed.
    fn literal_values(&self) -> Option<Vec<&str>> {
        match &self.fast {
            None => Some(vec![self.value.as_str()]),
            Some(Fast::Literal(s)) => Some(vec![s.as_str()]),
            Some(Fast::Set(set)) => Some(set.iter().map(|s| s.as_str()).collect()),
            Some(Fast::Any | Fast::NonEmpty | Fast::Prefix(_) | Fast::Regex(_)) => None,
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
    if let Some(re) = COMPILED.lock().get(pattern) {
        return Ok(Fast::Regex(re.clone()));
    }
    // No fully built DFA: building one costs more than a query's whole selection
    // and a label value is matched a handful of times per query, which the lazy
    // DFA does as fast. Otherwise the `regex` crate's defaults.
    let config = meta::Config::new().dfa(false);
    let re = meta::Builder::new()
        .configure(config)
        .build(&format!("^(?s:{pattern})$"))
        .map_err(|e| MatcherError::BadRegex {
            name: name.to_string(),
            pattern: pattern.to_string(),
            reason: build_error_text(&e),
        })?;
    let mut compiled = COMPILED.lock();
    if compiled.len() >= COMPILED_MAX {
        compiled.clear();
    }
    compiled.insert(pattern.to_string(), re.clone());
    Ok(Fast::Regex(re))
}

/// Patterns compiled recently, by pattern: dashboards and rules send the same
/// selectors over and over, and compiling costs more than a small selection. A
/// clone shares the compiled program. Emptied when full.
static COMPILED: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashMap<String, Regex>>> =
    std::sync::LazyLock::new(Default::default);

/// Most patterns `COMPILED` holds.
const COMPILED_MAX: usize = 256;

/// A build error in the words the `regex` crate uses (the parser's message, or
/// the size limit).
fn build_error_text(e: &meta::BuildError) -> String {
    if let Some(limit) = e.size_limit() {
        return format!("Compiled regex exceeds size limit of {limit} bytes.");
    }
    match e.syntax_error() {
        Some(syntax) => syntax.to_string(),
        None => e.to_string(),
    }
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
            let re = regex::Regex::new(&format!("^(?s:{p})$")).unwrap();
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
    fn bad_regex_reason_is_the_regex_crates() {
        for p in ["(", "a{2,1}", "[z-a]", "\\"] {
            let want = regex::Regex::new(&format!("^(?s:{p})$"))
                .unwrap_err()
                .to_string();
            match Matcher::new(MatchType::Regexp, "job", p) {
                Err(MatcherError::BadRegex { reason, .. }) => assert_eq!(reason, want, "{p}"),
                Ok(_) => panic!("{p} compiled"),
            }
        }
    }

    #[test]
    fn rejected_set_is_the_negated_literals() {
        assert_eq!(m(MatchType::NotEqual, "x").rejected_set(), Some(vec!["x"]));
        assert_eq!(
            m(MatchType::NotRegexp, "b|a").rejected_set(),
            Some(vec!["a", "b"])
        );
        assert_eq!(m(MatchType::NotRegexp, "z[0-2]").rejected_set(), None);
        assert_eq!(m(MatchType::Regexp, "a").rejected_set(), None);
        assert_eq!(m(MatchType::NotRegexp, "a").set_matches(), None);
    }

    #[test]
    fn bad_regex_names_label_and_pattern() {
        let err = Matcher::new(MatchType::Regexp, "job", "(").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("job") && msg.contains("\"(\""), "{msg}");
    }
}
