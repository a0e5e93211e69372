//! Where function calls and aggregations sit in the query text, for the
//! `(line:col)` Prometheus appends to annotations ("… for metric name "x" (1:25)").
//!
//! `promql-parser` keeps no positions, so the text is scanned for the places a call
//! or aggregation starts and where each of its arguments starts. Read left to
//! right these come in the same order as the calls and aggregations of the syntax
//! tree in pre-order, which is how the evaluator pairs them with nodes. When the
//! two counts disagree the positions are not used at all (annotations then carry
//! none) rather than risk wrong ones.

use promql_parser::parser::Expr;
use std::collections::HashMap;

/// Start positions (`line:col`) of one call or aggregation and of its arguments.
#[derive(Debug, Clone, Default)]
pub(super) struct CallPos {
    pub start: String,
    pub args: Vec<String>,
}

const AGGREGATORS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a label list in parentheses, which are not calls.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Positions keyed by the address of each `Call` / `AggregateExpr` under `expr`.
pub(super) fn positions(query: &str, expr: &Expr) -> HashMap<usize, CallPos> {
    let spans = scan(query);
    let mut nodes = Vec::new();
    collect(expr, &mut nodes);
    if spans.len() != nodes.len() {
        return HashMap::new();
    }
    nodes
        .into_iter()
        .zip(spans)
        .map(|(k, (start, args))| {
            (
                k,
                CallPos {
                    start: line_col(query, start),
                    args: args.into_iter().map(|a| line_col(query, a)).collect(),
                },
            )
        })
        .collect()
}

/// Prometheus's `line:col` for a byte offset (both 1-based).
fn line_col(q: &str, pos: usize) -> String {
    let before = &q[..pos.min(q.len())];
    let line = before.matches('\n').count() + 1;
    let col = match before.rfind('\n') {
        Some(nl) => pos - nl,
        None => pos + 1,
    };
    format!("{line}:{col}")
}

/// Calls and aggregations in pre-order.
fn collect(e: &Expr, out: &mut Vec<usize>) {
    match e {
        Expr::Aggregate(a) => {
            out.push(a as *const _ as usize);
            if let Some(p) = &a.param {
                collect(p, out);
            }
            collect(&a.expr, out);
        }
        Expr::Call(c) => {
            out.push(c as *const _ as usize);
            for a in &c.args.args {
                collect(a, out);
            }
        }
        Expr::Unary(u) => collect(&u.expr, out),
        Expr::Binary(b) => {
            collect(&b.lhs, out);
            collect(&b.rhs, out);
        }
        Expr::Paren(p) => collect(&p.expr, out),
        Expr::Subquery(s) => collect(&s.expr, out),
        _ => {}
    }
}

use super::rewrite::skip_string;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the bracket group opening at `i`.
fn skip_group(b: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}

/// The start offsets of the arguments of the call whose `(` is at `open`.
pub(super) fn arg_starts(b: &[u8], open: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let first = skip_ws(b, open + 1);
    if first < b.len() && b[first] == b')' {
        return out;
    }
    out.push(first);
    let mut j = open + 1;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            b'(' | b'[' | b'{' => {
                j = skip_group(b, j);
                continue;
            }
            b')' => break,
            b',' => out.push(skip_ws(b, j + 1)),
            _ => {}
        }
        j += 1;
    }
    out
}

/// (start, argument starts) of every call and aggregation, in text order.
fn scan(q: &str) -> Vec<(usize, Vec<usize>)> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut prev_non_ws: u8 = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                prev_non_ws = c;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            // Ranges, steps and matchers hold no calls the tree keeps.
            b'[' | b'{' => {
                i = skip_group(b, i);
                prev_non_ws = b']';
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = q[start..i].to_ascii_lowercase();
                let after_at = prev_non_ws == b'@';
                prev_non_ws = b'a';
                let mut j = skip_ws(b, i);
                if LABEL_LISTS.contains(&word.as_str()) {
                    if j < b.len() && b[j] == b'(' {
                        i = skip_group(b, j);
                    }
                    continue;
                }
                if word == "offset" {
                    i = skip_offset(q, j);
                    continue;
                }
                if AGGREGATORS.contains(&word.as_str()) && j < b.len() && b[j] != b'(' {
                    // `sum by (x) (…)`: the label list comes first.
                    let k = j;
                    while j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_') {
                        j += 1;
                    }
                    let kw = q[k..j].to_ascii_lowercase();
                    if kw != "by" && kw != "without" {
                        continue;
                    }
                    j = skip_ws(b, j);
                    if j >= b.len() || b[j] != b'(' {
                        continue;
                    }
                    j = skip_ws(b, skip_group(b, j));
                }
                if !after_at && j < b.len() && b[j] == b'(' {
                    out.push((start, arg_starts(b, j)));
                    i = j + 1;
                    prev_non_ws = b'(';
                }
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    prev_non_ws = c;
                }
                i += 1;
            }
        }
    }
    out
}

/// Past what follows `offset` at `j`: a signed number, duration or parenthesised
/// or function-call duration expression.
fn skip_offset(q: &str, j: usize) -> usize {
    let b = q.as_bytes();
    let mut j = j;
    while j < b.len() && (b[j] == b'-' || b[j] == b'+' || b[j].is_ascii_whitespace()) {
        j += 1;
    }
    if j < b.len() && b[j] == b'(' {
        return skip_group(b, j);
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
        j += 1;
    }
    let k = skip_ws(b, j);
    if k < b.len() && b[k] == b'(' {
        return skip_group(b, k);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_calls_and_aggregations() {
        let q = "sum(sort(series))";
        let s = scan(q);
        assert_eq!(s, vec![(0, vec![4]), (4, vec![9])]);
        let q = "quantile without(point)(NaN, data)";
        assert_eq!(scan(q), vec![(0, vec![24, 29])]);
        let q = "histogram_fraction(-Inf, 1, series) + x @ start()";
        assert_eq!(scan(q), vec![(0, vec![19, 25, 28])]);
        assert_eq!(line_col("a\nbc", 3), "2:2");
    }
}
