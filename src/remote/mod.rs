//! Prometheus remote write 1.0: decoding a snappy-compressed protobuf
//! `WriteRequest` and appending it through `storage::Appendable`.

pub mod prompb;

use crate::labels::LabelsBuilder;
use crate::storage::{AppendError, Appendable};
use prost::Message;

/// Largest decompressed request accepted, like Prometheus's decode limit.
pub const DECOMPRESSED_BYTES_MAX: usize = 32 << 20;

/// Why a write request was refused; maps to an HTTP status in `web`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request itself is bad (HTTP 400): clients must not retry it.
    #[error("{0}")]
    BadRequest(String),
    /// Storage failed (HTTP 500): clients retry.
    #[error("{0}")]
    Storage(String),
    /// Storage cannot take the write now (HTTP 503: no quorum): clients retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Decodes a snappy-compressed `WriteRequest`.
pub fn decode_write_request(body: &[u8]) -> Result<prompb::WriteRequest, WriteError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| WriteError::BadRequest(format!("snappy decode: {e}")))?;
    if len > DECOMPRESSED_BYTES_MAX {
        return Err(WriteError::BadRequest(format!(
            "decompressed request of {len} bytes exceeds the limit of {DECOMPRESSED_BYTES_MAX}"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| WriteError::BadRequest(format!("snappy decode: {e}")))?;
    prompb::WriteRequest::decode(raw.as_slice())
        .map_err(|e| WriteError::BadRequest(format!("protobuf decode: {e}")))
}

/// Encodes a `WriteRequest` as a sender does (protobuf, then snappy block format).
pub fn encode_write_request(req: &prompb::WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer cannot fail")
}

/// Appends every sample of `req` in one transaction. Like Prometheus's receiver,
/// samples refused as out of order, duplicate or out of bounds are skipped, the rest
/// are committed, and the request then fails with 400 naming the first refusal.
pub fn write(store: &dyn Appendable, req: &prompb::WriteRequest) -> Result<(), WriteError> {
    let mut app = store.appender();
    let mut first_refusal: Option<String> = None;
    let mut refused = 0usize;
    for ts in &req.timeseries {
        let mut b = LabelsBuilder::new();
        for l in &ts.labels {
            if !is_valid_label_name(&l.name) {
                app.rollback();
                return Err(WriteError::BadRequest(format!(
                    "invalid label name {:?} in series with labels {:?}",
                    l.name,
                    ts.labels
                        .iter()
                        .map(|l| (&l.name, &l.value))
                        .collect::<Vec<_>>()
                )));
            }
            b.set(&l.name, &l.value);
        }
        let labels = b.build();
        if labels.metric_name().is_empty() {
            app.rollback();
            return Err(WriteError::BadRequest(format!(
                "series {labels} has no metric name"
            )));
        }
        let mut series_ref = 0;
        for s in &ts.samples {
            match app.append(series_ref, &labels, s.timestamp, s.value) {
                Ok(r) => series_ref = r,
                Err(
                    e @ (AppendError::OutOfOrder
                    | AppendError::DuplicateSampleForTimestamp
                    | AppendError::OutOfBounds),
                ) => {
                    refused += 1;
                    if first_refusal.is_none() {
                        first_refusal = Some(format!(
                            "{e} for series {labels} at timestamp {}",
                            s.timestamp
                        ));
                    }
                }
                Err(AppendError::InvalidLabels(m)) => {
                    app.rollback();
                    return Err(WriteError::BadRequest(m));
                }
                Err(e @ AppendError::Unavailable(_)) => {
                    app.rollback();
                    return Err(WriteError::Unavailable(e.to_string()));
                }
                Err(e) => {
                    app.rollback();
                    return Err(WriteError::Storage(e.to_string()));
                }
            }
        }
    }
    app.commit().map_err(|e| match e {
        AppendError::Unavailable(_) => WriteError::Unavailable(e.to_string()),
        e => WriteError::Storage(e.to_string()),
    })?;
    match first_refusal {
        Some(msg) => Err(WriteError::BadRequest(format!(
            "{refused} sample(s) refused; first: {msg}"
        ))),
        None => Ok(()),
    }
}

/// Label names as Prometheus validates them: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
