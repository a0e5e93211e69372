//! Query results: scalars, strings, instant vectors and range vectors (matrices).
//!
//! Points carry float values only for now. Native histograms will add a
//! `histograms` list next to `floats` in `Series` and an optional histogram in
//! `Sample`, as Prometheus does, without changing the float paths.

use crate::labels::Labels;

/// One float point of a series: milliseconds since the epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FPoint {
    pub t: i64,
    pub f: f64,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: Labels,
    /// The evaluation time in ms.
    pub t: i64,
    pub f: f64,
}

/// One series of a range vector, its points in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: Labels,
    pub floats: Vec<FPoint>,
}

/// The result of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number at an evaluation time (ms).
    Scalar { t: i64, v: f64 },
    /// A string literal at an evaluation time (ms).
    String { t: i64, s: String },
    /// An instant vector, in the order the engine produced it.
    Vector(Vec<Sample>),
    /// A range vector (range queries, or an instant query of a range selector),
    /// sorted by labels.
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus's name for the type: `scalar`, `string`, `vector` or `matrix`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
