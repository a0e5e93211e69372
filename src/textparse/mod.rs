//! Parsers for the Prometheus text exposition format and OpenMetrics text.
//!
//! Both parsers walk a byte slice and yield [`Entry`]s: metadata (`# HELP`,
//! `# TYPE`, `# UNIT`), comments, and samples whose labels include the metric name
//! as `__name__`. They follow Prometheus's own parsers (`model/textparse`) in what
//! they accept and reject, including Prometheus 3's quoted UTF-8 names
//! (`{"my.metric", a="b"} 1`) and its canonical spelling of `le` and `quantile`
//! values. The first error ends the iteration: a broken exposition is rejected as a
//! whole, as a scrape is.
//!
//! ```
//! use hearth::textparse::{Entry, PromParser};
//!
//! let body = b"# TYPE up gauge\nup{job=\"node\"} 1 1700000000000\n";
//! let samples: Vec<_> = PromParser::new(body)
//!     .filter_map(|e| match e {
//!         Ok(Entry::Sample { labels, value, timestamp_ms, .. }) => Some((labels, value, timestamp_ms)),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(samples[0].0.get("job"), "node");
//! assert_eq!(samples[0].2, Some(1_700_000_000_000));
//! ```
//!
//! Deliberate differences from Prometheus, all on input it would also reject or
//! that no exporter writes: repeated label names fail here (Prometheus fails them
//! later, in the scrape loop); a bare metric name must be followed by whitespace or
//! `{` (`a-1 2` is not the sample `a` = -1); only a *quoted* lone string in braces
//! names the metric; a series may carry at most [`LABELS_PER_SERIES_MAX`] labels.
//!
//! The parsers never look at families beyond the `TYPE` that decides label
//! normalisation: a sample is reported with its full name (`foo_total`,
//! `foo_bucket`). [`series_in_family`] answers whether such a name belongs to a
//! family for callers that attach metadata.

mod float;
mod lexer;
mod openmetrics;
mod parser;
mod prom;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use crate::labels::Labels;

pub use float::{normal_nan, NORMAL_NAN_BITS};
pub use lexer::LABELS_PER_SERIES_MAX;
pub use openmetrics::OpenMetricsParser;
pub use parser::Parser;
pub use prom::PromParser;

/// The type a `# TYPE` line declares for a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    /// OpenMetrics only.
    GaugeHistogram,
    Summary,
    /// OpenMetrics only.
    Info,
    /// OpenMetrics only.
    StateSet,
    /// `unknown` in OpenMetrics, `untyped` in the Prometheus format, and the type
    /// of every family without a `# TYPE` line.
    #[default]
    Unknown,
}

impl MetricType {
    /// The name OpenMetrics (and Prometheus's metadata API) uses for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exemplar attached to an OpenMetrics sample (`... # {trace_id="x"} 1.0 [ts]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    /// The exemplar's own timestamp, converted from seconds to milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// One item of an exposition. Strings borrow from the parsed body unless escapes
/// had to be undone.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// `# HELP family text`, with `\\` and `\n` (and in OpenMetrics `\"`) undone.
    Help {
        metric_family: Cow<'a, str>,
        help: Cow<'a, str>,
    },
    /// `# TYPE family type`.
    Type {
        metric_family: Cow<'a, str>,
        kind: MetricType,
    },
    /// `# UNIT family unit` (OpenMetrics only). An empty unit means "none".
    Unit {
        metric_family: Cow<'a, str>,
        unit: &'a str,
    },
    /// A sample: the series' labels (the metric name as `__name__`, labels with
    /// empty values dropped), its value (every NaN is [`NORMAL_NAN_BITS`]), and its
    /// explicit timestamp if it has one. Prometheus-format timestamps are integer
    /// milliseconds; OpenMetrics timestamps are float seconds, converted to
    /// milliseconds by truncating `seconds * 1000` as Prometheus does.
    Sample {
        labels: Labels,
        value: f64,
        timestamp_ms: Option<i64>,
        /// Only OpenMetrics has exemplars.
        exemplar: Option<Exemplar>,
    },
    /// Any other `#` line (Prometheus format only; OpenMetrics forbids them).
    Comment,
}

/// A sample as [`Parser::next_raw`] yields it, before its label set is built:
/// `series` is the series exactly as written (the metric name and the `{...}`
/// label set, byte for byte, without the value), so a caller can recognise a series it has seen before by these bytes alone, as
/// Prometheus's scrape cache does. The same bytes always mean the same labels, except
/// that `le` and `quantile` values are normalised only after a `# TYPE` line saying
/// histogram or summary.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample<'a> {
    pub series: &'a [u8],
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar>,
}

impl<'a> RawSample<'a> {
    /// The sample as an [`Entry`], with its labels built.
    pub fn into_entry(self, labels: Labels) -> Entry<'a> {
        Entry::Sample {
            labels,
            value: self.value,
            timestamp_ms: self.timestamp_ms,
            exemplar: self.exemplar,
        }
    }
}

/// One item of an exposition as the parsers' `next_raw` yields it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawEntry<'a> {
    Sample(RawSample<'a>),
    /// Anything but a sample (never [`Entry::Sample`]).
    Other(Entry<'a>),
}

/// Why an exposition was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number of the offending text.
    pub line: usize,
    /// 1-based byte column of the offending text within its line.
    pub column: usize,
    /// What was wrong, quoting the offending text.
    pub message: String,
}

/// The two text formats a scrape can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl TextFormat {
    /// The format a `Content-Type` header names, judged by its media type alone
    /// (parameters such as `version` and `charset` are ignored, case does not
    /// matter). `None` for anything else, including an empty header: the caller
    /// decides on a fallback, as Prometheus's `fallback_scrape_protocol` does.
    pub fn from_content_type(content_type: &str) -> Option<TextFormat> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Some(TextFormat::OpenMetrics)
        } else if media_type.eq_ignore_ascii_case("text/plain") {
            Some(TextFormat::Prometheus)
        } else {
            None
        }
    }
}

/// A parser for either text format, chosen at run time.
pub enum TextParser<'a> {
    Prometheus(PromParser<'a>),
    OpenMetrics(OpenMetricsParser<'a>),
}

impl<'a> TextParser<'a> {
    pub fn new(format: TextFormat, body: &'a [u8]) -> TextParser<'a> {
        match format {
            TextFormat::Prometheus => TextParser::Prometheus(PromParser::new(body)),
            TextFormat::OpenMetrics => TextParser::OpenMetrics(OpenMetricsParser::new(body)),
        }
    }

    /// The next entry with a sample's labels left unbuilt; see [`RawSample`].
    pub fn next_raw(&mut self) -> Option<Result<RawEntry<'a>, ParseError>> {
        match self {
            TextParser::Prometheus(p) => p.next_raw(),
            TextParser::OpenMetrics(p) => p.next_raw(),
        }
    }

    /// The labels of the sample `next_raw` returned last.
    pub fn labels(&mut self) -> Result<Labels, ParseError> {
        match self {
            TextParser::Prometheus(p) => p.labels(),
            TextParser::OpenMetrics(p) => p.labels(),
        }
    }
}

impl<'a> Iterator for TextParser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            TextParser::Prometheus(p) => p.next(),
            TextParser::OpenMetrics(p) => p.next(),
        }
    }
}

/// A parser for `body` in the format its `Content-Type` names, or `None` when the
/// header names neither text format (see [`TextFormat::from_content_type`]).
pub fn parser_for_content_type<'a>(content_type: &str, body: &'a [u8]) -> Option<TextParser<'a>> {
    TextFormat::from_content_type(content_type).map(|f| TextParser::new(f, body))
}

/// Whether the series called `series` belongs to the metric family `family` of type
/// `kind`, given the suffixes each type's samples carry: `_total` and `_created`
/// for counters (a family may itself be named with `_total`), `_bucket`, `_sum`,
/// `_count`, `_created` for histograms, `_bucket`, `_gsum`, `_gcount` for gauge
/// histograms, `_sum`, `_count`, `_created` for summaries, `_info` for info
/// metrics. Follows Prometheus's `isSeriesPartOfFamily`, plus OpenMetrics's
/// `_created` series.
pub fn series_in_family(series: &str, family: &str, kind: MetricType) -> bool {
    if !series.starts_with(family) {
        return false;
    }
    let suffixes: &[&str] = match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Summary => &["_sum", "_count", "_created"],
        MetricType::Info => &["_info"],
        _ => &[],
    };
    let family = match kind {
        MetricType::Counter => family.strip_suffix("_total").unwrap_or(family),
        MetricType::Info => family.strip_suffix("_info").unwrap_or(family),
        _ => family,
    };
    let base = suffixes
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series);
    base == family
}
