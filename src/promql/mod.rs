//! PromQL: parsing (with the `promql-parser` crate) and evaluation with Prometheus
//! 3.x semantics over any `storage::Queryable`.
//!
//! The engine never names TSDB types: it reads through `Queryable` only, so the same
//! engine answers queries over the local TSDB, the in-memory test store and (later)
//! the cluster's fan-out querier.
//!
//! Evaluation walks the expression once per output step. Each vector or matrix
//! selector reads its series from storage once per query, over the whole time range
//! it needs (worked out before evaluation), and the steps then look up samples in
//! that data. Subquery results are memoised per inner evaluation time, so
//! overlapping windows of consecutive steps are computed once.
//!
//! Prometheus 3 syntax `promql-parser` 0.11 lacks (duration expressions, `step()`,
//! `anchored`/`smoothed`, …) is added by a pre-pass over the query text
//! (`rewrite`); `docs/promql.md` lists what is still missing. Native histograms are
//! a later step: `value` keeps floats apart so histogram points can be added next
//! to them.

mod eval;
mod functions;
mod positions;
mod rewrite;
pub mod value;

pub use eval::labels_hash;
pub use value::{FPoint, Sample, Series, Value};

use crate::storage::Queryable;
use tokio_util::sync::CancellationToken;

/// Engine settings, with Prometheus's defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (`--query.lookback-delta`).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold in memory at once (`--query.max-samples`):
    /// the samples of the current step (instant vectors, range-vector windows,
    /// subquery points) plus the result so far; and, separately, the raw samples
    /// the selectors read from storage (held for the whole query), so memory is
    /// bounded by this limit and not by the data size.
    pub max_samples: usize,
    /// Longest a query may run (`--query.timeout`); 0 means no limit.
    pub timeout_ms: u64,
    /// Step of a subquery written without one (`x[10m:]`); Prometheus uses the
    /// rule evaluation interval, 1m by default.
    pub no_step_subquery_interval_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout_ms: 2 * 60 * 1000,
            no_step_subquery_interval_ms: 60 * 1000,
        }
    }
}

/// A sample value as the HTTP API writes it (Go's `FormatFloat(v, 'f', -1, 64)`):
/// `1`, `0.5`, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    crate::gofloat::format(v, 'f', None)
}

pub use crate::gofloat::push_f as push_float_plain;

/// Most steps a range query may have, as in Prometheus's API.
pub const RANGE_STEPS_MAX: i64 = 11_000;

/// Why a query failed. The messages are Prometheus's where clients or tests match on
/// them; `web::api` maps the kinds to Prometheus's error types and status codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse or does not type-check (`bad_data`).
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed (`execution`).
    #[error("{0}")]
    Execution(String),
    /// The query ran longer than its timeout (`timeout`).
    #[error("query timed out in {0}")]
    Timeout(String),
    /// The caller went away or cancelled (`canceled`).
    #[error("query was canceled in {0}")]
    Canceled(String),
    /// More than `max_samples` samples would be held (`execution`).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(String),
    /// Storage failed (`internal`).
    #[error("{0}")]
    Storage(String),
}

/// A query's value with the annotations evaluation produced, as the API shows them
/// (`PromQL warning: … (1:25)`, `PromQL info: …`), with the position of the call
/// or argument they are about where `positions` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// A parsed query, ready to evaluate.
pub struct Query {
    expr: promql_parser::parser::Expr,
    /// The query as written (annotation positions refer to it).
    text: String,
    /// The query text when its duration expressions use `step()` or `range()`: it is
    /// rewritten and parsed again with each query's values.
    source: Option<String>,
}

impl Query {
    /// The expression to evaluate for a query with this step and range.
    fn expr_for(
        &self,
        step_ms: i64,
        range_ms: i64,
    ) -> Result<std::borrow::Cow<'_, promql_parser::parser::Expr>, QueryError> {
        match &self.source {
            None => Ok(std::borrow::Cow::Borrowed(&self.expr)),
            Some(text) => {
                let q = parse_with(text, rewrite::DurationParams { step_ms, range_ms })?;
                Ok(std::borrow::Cow::Owned(q.expr))
            }
        }
    }
}

impl Query {
    /// Prometheus's type of the expression: `scalar`, `string`, `vector` or `matrix`.
    pub fn value_type(&self) -> &'static str {
        use promql_parser::parser::value::ValueType;
        match self.expr.value_type() {
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
        }
    }
}

/// Parses a PromQL expression (Prometheus 3 syntax: see `rewrite` for what is
/// added to `promql-parser`'s).
pub fn parse(query: &str) -> Result<Query, QueryError> {
    // `step()` and `range()` get their values when the query runs; any positive
    // value checks the rest of the query now.
    parse_with(
        query,
        rewrite::DurationParams {
            step_ms: 60_000,
            range_ms: 60_000,
        },
    )
}

fn parse_with(query: &str, params: rewrite::DurationParams) -> Result<Query, QueryError> {
    let rw = rewrite::rewrite(query, params).map_err(QueryError::Parse)?;
    let expr = promql_parser::parser::parse(&rw.text).map_err(QueryError::Parse)?;
    Ok(Query {
        expr,
        text: query.to_string(),
        source: rw.uses_params.then(|| query.to_string()),
    })
}

/// The PromQL engine: settings shared by every query.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// An engine with these settings.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's settings.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `t_ms`. A range selector gives a matrix, a string literal
    /// a string, a number a scalar, anything else an instant vector.
    pub fn instant_query(
        &self,
        storage: &dyn Queryable,
        query: &Query,
        t_ms: i64,
        cancel: Option<&CancellationToken>,
    ) -> Result<QueryResult, QueryError> {
        let expr = query.expr_for(0, 0)?;
        eval::run(
            &self.opts,
            storage,
            &expr,
            &query.text,
            t_ms,
            t_ms,
            0,
            cancel,
            true,
        )
    }

    /// Evaluates `query` at `start_ms, start_ms + step_ms, …, ≤ end_ms`. The result is
    /// always a matrix sorted by labels; scalars become one series without labels.
    pub fn range_query(
        &self,
        storage: &dyn Queryable,
        query: &Query,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        cancel: Option<&CancellationToken>,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        if (end_ms - start_ms) / step_ms > RANGE_STEPS_MAX {
            return Err(QueryError::Parse(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        use promql_parser::parser::value::ValueType;
        let vt = query.expr.value_type();
        if vt != ValueType::Scalar && vt != ValueType::Vector {
            return Err(QueryError::Parse(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                match vt {
                    ValueType::Matrix => "range vector",
                    _ => "string",
                }
            )));
        }
        let expr = query.expr_for(step_ms, end_ms - start_ms)?;
        eval::run(
            &self.opts,
            storage,
            &expr,
            &query.text,
            start_ms,
            end_ms,
            step_ms,
            cancel,
            false,
        )
    }
}

#[cfg(test)]
mod tests;
