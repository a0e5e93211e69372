//! Prometheus remote write 1.0: decoding a snappy-compressed protobuf
//! `WriteRequest` and appending it through `storage::Appendable`.

pub mod prompb;

use crate::labels::{Labels, LabelsBuilder};
use crate::storage::{check_order, AppendError, Appendable, Appender};
use prost::Message;
use std::collections::HashMap;

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

/// Appends every sample of `req` in one transaction, as Prometheus's receiver
/// does: the first sample refused as out of order, a duplicate with another value
/// or out of bounds rolls the whole request back and answers 400 with the
/// storage's message ("out of order sample", ...), so senders drop the request
/// instead of retrying it; an identical duplicate is accepted. Unlike Prometheus,
/// a sample older than one before it in the same request is refused too (there
/// its commit would drop it silently).
pub fn write(store: &dyn Appendable, req: &prompb::WriteRequest) -> Result<(), WriteError> {
    let mut app = store.appender();
    match append_request(app.as_mut(), req) {
        Ok(()) => app.commit().map_err(append_error),
        Err(e) => {
            app.rollback();
            Err(e)
        }
    }
}

fn append_request(app: &mut dyn Appender, req: &prompb::WriteRequest) -> Result<(), WriteError> {
    // The newest sample appended per series in this request (timestamp, value bits).
    let mut newest: HashMap<Labels, (i64, u64)> = HashMap::new();
    for ts in &req.timeseries {
        let labels = series_labels(ts)?;
        let mut last = newest.get(&labels).copied();
        let mut series_ref = 0;
        for s in &ts.samples {
            let refused = |e: AppendError| {
                tracing::warn!(error = %e, series = %labels, timestamp = s.timestamp, "remote write: sample refused");
                append_error(e)
            };
            if last.is_some() && !check_order(last, s.timestamp, s.value).map_err(refused)? {
                continue;
            }
            series_ref = app
                .append(series_ref, &labels, s.timestamp, s.value)
                .map_err(refused)?;
            last = Some((s.timestamp, s.value.to_bits()));
        }
        if let Some(l) = last {
            newest.insert(labels, l);
        }
    }
    Ok(())
}

/// The label set of one series of a request, validated.
fn series_labels(ts: &prompb::TimeSeries) -> Result<Labels, WriteError> {
    let mut b = LabelsBuilder::new();
    for l in &ts.labels {
        if !is_valid_label_name(&l.name) {
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
        return Err(WriteError::BadRequest(format!(
            "series {labels} has no metric name"
        )));
    }
    Ok(labels)
}

/// How an append or commit failure answers: refusals of a sample are the
/// client's (400, Prometheus's text), a store without quorum 503, the rest 500.
fn append_error(e: AppendError) -> WriteError {
    match e {
        AppendError::OutOfOrder
        | AppendError::DuplicateSampleForTimestamp
        | AppendError::OutOfBounds => WriteError::BadRequest(e.to_string()),
        AppendError::InvalidLabels(m) => WriteError::BadRequest(m),
        AppendError::Unavailable(_) => WriteError::Unavailable(e.to_string()),
        AppendError::Storage(_) => WriteError::Storage(e.to_string()),
    }
}

/// Label names as Prometheus validates them: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
