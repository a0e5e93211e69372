//! Prometheus remote write 1.0: the receiver (`Receiver`) decodes a
//! snappy-compressed protobuf `WriteRequest` (`decode`, zero-copy) and appends it
//! through `storage::Appendable`. `negotiate` reads a request's `Content-Type` and
//! `Content-Encoding` as Prometheus's receiver does, so a remote-write 2.0 sender
//! is told (HTTP 415) to fall back to 1.0.

pub mod decode;
pub mod prompb;

use crate::fxhash::HashMap as FxHashMap;
use crate::labels::{Label, Labels, LABEL_STRING_LEN_MAX};
use crate::storage::{check_order, AppendError, Appendable, Appender};
use parking_lot::Mutex;
use prost::Message;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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

/// The media type of remote-write requests.
const PROTOBUF_MEDIA_TYPE: &str = "application/x-protobuf";
/// Remote write 1.0's message, the one this receiver decodes.
pub const PROTO_MSG_V1: &str = "prometheus.WriteRequest";
/// Remote write 2.0's message, known but not accepted (yet).
pub const PROTO_MSG_V2: &str = "io.prometheus.write.v2.Request";

/// Checks a request's `Content-Type` and `Content-Encoding` headers as
/// Prometheus's receiver does: no content type means remote write 1.0, no
/// encoding means snappy. `Err` is the reason for an HTTP 415 (Unsupported Media
/// Type): another media type, a malformed parameter, an unknown `proto=`
/// message, the 2.0 message (which a 2.0 sender answers by retrying with 1.0),
/// or a compression other than snappy.
pub fn negotiate(content_type: Option<&str>, content_encoding: Option<&str>) -> Result<(), String> {
    let ct = content_type.map(str::trim).unwrap_or("");
    let msg = if ct.is_empty() {
        PROTO_MSG_V1
    } else {
        let mut parts = ct.split(';');
        let media = parts.next().unwrap_or("").trim();
        if media != PROTOBUF_MEDIA_TYPE {
            return Err(format!(
                "expected {PROTOBUF_MEDIA_TYPE} as the first (media) part, got {ct} content-type"
            ));
        }
        let mut msg = PROTO_MSG_V1;
        for p in parts {
            let Some((key, value)) = p.split_once('=').filter(|(_, v)| !v.contains('=')) else {
                return Err(format!(
                    "expected parameters to be key-values (RFC 9110), got {p} in {ct} content-type"
                ));
            };
            if key.trim() == "proto" {
                msg = match value.trim() {
                    PROTO_MSG_V1 => PROTO_MSG_V1,
                    PROTO_MSG_V2 => PROTO_MSG_V2,
                    other => {
                        return Err(format!(
                            "got {ct} content type; unknown remote write protobuf message {other}, supported: {PROTO_MSG_V1}, {PROTO_MSG_V2}"
                        ))
                    }
                };
                break;
            }
        }
        msg
    };
    if msg != PROTO_MSG_V1 {
        return Err(format!(
            "{msg} protobuf message is not accepted by this server; accepted [{PROTO_MSG_V1}]"
        ));
    }
    match content_encoding.map(str::trim) {
        None | Some("") | Some("snappy") => Ok(()),
        Some(other) => Err(format!(
            "{other} encoding (compression) is not accepted by this server; only snappy is acceptable"
        )),
    }
}

/// Encodes a `WriteRequest` as a sender does (protobuf, then snappy block format).
pub fn encode_write_request(req: &prompb::WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer cannot fail")
}

/// The remote-write receiver: decodes request bodies and appends them to one
/// `Appendable`, remembering each series it has seen by the exact bytes of its
/// label fields (as the scrape cache remembers a series by its exposition text),
/// so a known series costs one hash lookup: no label parsing, validation or
/// `Labels` allocation, and the store's series ref from last time.
pub struct Receiver {
    store: Arc<dyn Appendable>,
    cache: SeriesCache,
}

impl Receiver {
    pub fn new(store: Arc<dyn Appendable>) -> Receiver {
        Receiver {
            store,
            cache: SeriesCache::new(),
        }
    }

    /// Decompresses, decodes and appends one request body (snappy-compressed
    /// `WriteRequest`), with `write`'s answers.
    pub fn write_body(&self, body: &[u8]) -> Result<(), WriteError> {
        let raw = decompress(body)?;
        let req = decode::decode(&raw).map_err(protobuf_error)?;
        self.write(&req)
    }

    /// Appends every sample of `req` in one transaction, as Prometheus's receiver
    /// does: the first sample refused as out of order, a duplicate with another
    /// value or out of bounds rolls the whole request back and answers 400 with
    /// the storage's message ("out of order sample", ...), so senders drop the
    /// request instead of retrying it; an identical duplicate is accepted. Unlike
    /// Prometheus, a sample older than one before it in the same request is
    /// refused too (there its commit would drop it silently). A series with
    /// invalid labels (a bad label name, a repeated name, no metric name, bad
    /// UTF-8) refuses the request with 400 too, before anything is appended.
    pub fn write(&self, req: &decode::RequestView<'_>) -> Result<(), WriteError> {
        let series = self.resolve(req)?;
        // The store may report refusals at commit (`Appendable::batch_appender`):
        // this writer rolls the whole request back on any refusal anyway.
        let mut app = self.store.batch_appender();
        match append_request(app.as_mut(), req, &series) {
            Ok(()) => app.commit().map_err(append_error),
            Err(e) => {
                app.rollback();
                Err(e)
            }
        }
    }

    /// The cached series of every series of `req`, in order: looked up by their
    /// label bytes, parsed and validated (and remembered) when new.
    fn resolve(&self, req: &decode::RequestView<'_>) -> Result<Vec<Arc<CachedSeries>>, WriteError> {
        let mut out = Vec::with_capacity(req.series.len());
        let mut pairs = Vec::new();
        for s in &req.series {
            let key = s.labels_key.map(|k| (xxhash_rust::xxh3::xxh3_64(k), k));
            if let Some(hit) = key.and_then(|(hash, k)| self.cache.get(hash, k)) {
                out.push(hit);
                continue;
            }
            s.labels(&mut pairs).map_err(protobuf_error)?;
            let labels = series_labels(&mut pairs)?;
            let series = Arc::new(CachedSeries::new(labels));
            if let Some((hash, k)) = key {
                self.cache.insert(hash, k, series.clone());
            }
            out.push(series);
        }
        Ok(out)
    }
}

/// Decompresses a snappy block-format body, refusing one that would exceed
/// `DECOMPRESSED_BYTES_MAX`.
fn decompress(body: &[u8]) -> Result<Vec<u8>, WriteError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| WriteError::BadRequest(format!("snappy decode: {e}")))?;
    if len > DECOMPRESSED_BYTES_MAX {
        return Err(WriteError::BadRequest(format!(
            "decompressed request of {len} bytes exceeds the limit of {DECOMPRESSED_BYTES_MAX}"
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| WriteError::BadRequest(format!("snappy decode: {e}")))
}

fn protobuf_error(e: decode::DecodeError) -> WriteError {
    WriteError::BadRequest(format!("protobuf decode: {e}"))
}

/// Most series the receiver's cache remembers. Past it a shard is emptied and
/// refilled by the series that keep coming, which bounds the memory of label
/// sets no longer written (series churn) at the price of re-parsing the live ones.
pub const SERIES_CACHE_MAX: usize = 1 << 20;
const CACHE_SHARDS: usize = 64;

/// A series the receiver knows: its validated labels, their hash (to spot a
/// series repeated in one request) and the store's ref from its last append.
#[derive(Debug)]
struct CachedSeries {
    labels: Labels,
    labels_hash: u64,
    series_ref: AtomicU64,
}

impl CachedSeries {
    fn new(labels: Labels) -> CachedSeries {
        CachedSeries {
            labels_hash: xxhash_rust::xxh3::xxh3_64(labels.encoded()),
            labels,
            series_ref: AtomicU64::new(0),
        }
    }
}

/// Label-field bytes → series, sharded so concurrent requests rarely wait on
/// each other. Keyed by the bytes' 64-bit hash; the bytes are compared too, and a
/// hash shared by two different label encodings just leaves the second uncached.
struct SeriesCache {
    shards: Vec<CacheShard>,
}

/// Label-bytes hash → (label bytes, series).
type CacheShard = Mutex<FxHashMap<u64, (Box<[u8]>, Arc<CachedSeries>)>>;

impl SeriesCache {
    fn new() -> SeriesCache {
        SeriesCache {
            shards: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &CacheShard {
        // The top bits pick the shard; the map hashes the whole word again.
        &self.shards[(hash >> 58) as usize % CACHE_SHARDS]
    }

    fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<CachedSeries>> {
        let shard = self.shard(hash).lock();
        match shard.get(&hash) {
            Some((k, s)) if **k == *key => Some(s.clone()),
            _ => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn insert(&self, hash: u64, key: &[u8], series: Arc<CachedSeries>) {
        let mut shard = self.shard(hash).lock();
        if shard.len() >= SERIES_CACHE_MAX / CACHE_SHARDS {
            shard.clear();
        }
        shard.entry(hash).or_insert_with(|| (key.into(), series));
    }
}

fn append_request(
    app: &mut dyn Appender,
    req: &decode::RequestView<'_>,
    series: &[Arc<CachedSeries>],
) -> Result<(), WriteError> {
    // A series sent twice in one request (rare) is checked against the newest
    // sample appended for it so far; equal label sets have equal hashes, so
    // distinct hashes mean no series repeats and no map is needed.
    let mut hashes: Vec<u64> = series.iter().map(|s| s.labels_hash).collect();
    hashes.sort_unstable();
    let repeats = hashes.windows(2).any(|w| w[0] == w[1]);
    let mut newest: FxHashMap<Labels, (i64, u64)> = FxHashMap::default();
    for (view, s) in req.series.iter().zip(series) {
        let labels = &s.labels;
        let mut last = if repeats {
            newest.get(labels).copied()
        } else {
            None
        };
        let old_ref = s.series_ref.load(Relaxed);
        let mut series_ref = old_ref;
        for &(t, v) in &req.samples[view.samples.clone()] {
            let refused = |e: AppendError| {
                tracing::warn!(error = %e, series = %labels, timestamp = t, "remote write: sample refused");
                append_error(e)
            };
            if last.is_some() && !check_order(last, t, v).map_err(refused)? {
                continue;
            }
            series_ref = app.append(series_ref, labels, t, v).map_err(refused)?;
            last = Some((t, v.to_bits()));
        }
        if series_ref != old_ref {
            s.series_ref.store(series_ref, Relaxed);
        }
        if repeats {
            if let Some(l) = last {
                newest.insert(labels.clone(), l);
            }
        }
    }
    Ok(())
}

/// The label set of one series of a request from its (name, value) pairs in
/// request order, validated: label names as Prometheus allows them, no name
/// twice, a metric name, names and values within `LABEL_STRING_LEN_MAX`. Labels
/// may come in any order (they are sorted, as Prometheus's receiver sorts them);
/// a label with an empty value is the same as an absent one.
fn series_labels(pairs: &mut [(&str, &str)]) -> Result<Labels, WriteError> {
    for &(name, value) in pairs.iter() {
        if !is_valid_label_name(name) {
            return Err(WriteError::BadRequest(format!(
                "invalid label name {name:?} in series with labels {pairs:?}"
            )));
        }
        if name.len() > LABEL_STRING_LEN_MAX || value.len() > LABEL_STRING_LEN_MAX {
            return Err(WriteError::BadRequest(format!(
                "label {name:?} in a series: name or value longer than {LABEL_STRING_LEN_MAX} bytes"
            )));
        }
    }
    if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(WriteError::BadRequest(format!(
                "duplicate label name {:?} in series with labels {:?}",
                w[0].0, pairs
            )));
        }
    }
    let labels = Labels::from_sorted(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|&(name, value)| Label { name, value }),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Matcher;

    #[test]
    fn content_negotiation_accepts_remote_write_1_0_and_refuses_the_rest() {
        let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
        for (ct, enc) in [
            (None, None),
            (Some(""), Some("")),
            (Some("application/x-protobuf"), Some("snappy")),
            (
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                None,
            ),
            (
                Some("application/x-protobuf; proto=prometheus.WriteRequest"),
                None,
            ),
            (Some("application/x-protobuf;charset=utf-8"), None),
        ] {
            assert_eq!(negotiate(ct, enc), Ok(()), "{ct:?} {enc:?}");
        }
        for (ct, enc, want) in [
            (Some(v2), None, "io.prometheus.write.v2.Request protobuf message is not accepted by this server; accepted [prometheus.WriteRequest]"),
            (Some("application/json"), None, "expected application/x-protobuf as the first (media) part, got application/json content-type"),
            (Some("application/x-protobuf;proto=foo.Bar"), None, "unknown remote write protobuf message foo.Bar"),
            (Some("application/x-protobuf;proto"), None, "expected parameters to be key-values"),
            (Some("application/x-protobuf;a=b=c"), None, "expected parameters to be key-values"),
            (None, Some("gzip"), "gzip encoding (compression) is not accepted by this server; only snappy is acceptable"),
        ] {
            let got = negotiate(ct, enc).expect_err(want);
            assert!(got.contains(want), "{ct:?} {enc:?}: {got}");
        }
    }
    use crate::storage::{Queryable, SelectHints};
    use crate::tsdb::db::{Db, DbOptions};

    struct Fixture {
        _dir: tempfile::TempDir,
        db: Arc<Db>,
        receiver: Receiver,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), DbOptions::default()).unwrap());
        let receiver = Receiver::new(db.clone());
        Fixture {
            _dir: dir,
            db,
            receiver,
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> prompb::TimeSeries {
        prompb::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| prompb::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                .collect(),
        }
    }

    fn body(ts: Vec<prompb::TimeSeries>) -> Vec<u8> {
        encode_write_request(&prompb::WriteRequest {
            timeseries: ts,
            metadata: vec![],
        })
    }

    /// Every series named `name` with its samples, as (labels text, [(t, v)]).
    fn stored(db: &Db, name: &str) -> Vec<(String, Vec<(i64, f64)>)> {
        let q = db.querier(i64::MIN, i64::MAX).unwrap();
        let hints = SelectHints {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            series_only: false,
            newest_only: false,
        };
        q.select(&hints, &[Matcher::equal("__name__", name)])
            .unwrap()
            .map(|s| {
                let s = s.unwrap();
                (
                    s.labels.to_string(),
                    s.samples.iter().map(|x| (x.t, x.v)).collect(),
                )
            })
            .collect()
    }

    fn bad_request(r: Result<(), WriteError>) -> String {
        match r {
            Err(WriteError::BadRequest(m)) => m,
            other => panic!("want a bad request, got {other:?}"),
        }
    }

    #[test]
    fn known_series_come_from_the_cache_and_keep_their_samples() {
        let f = fixture();
        let a = [("__name__", "m"), ("job", "a")];
        let b = [("__name__", "m"), ("job", "b")];
        f.receiver
            .write_body(&body(vec![
                series(&a, &[(1000, 1.0)]),
                series(&b, &[(1000, 2.0)]),
            ]))
            .unwrap();
        assert_eq!(f.receiver.cache.len(), 2);
        f.receiver
            .write_body(&body(vec![
                series(&a, &[(2000, 3.0)]),
                series(&b, &[(2000, 4.0)]),
            ]))
            .unwrap();
        assert_eq!(f.receiver.cache.len(), 2);
        assert_eq!(
            stored(&f.db, "m"),
            vec![
                (
                    "{__name__=\"m\", job=\"a\"}".to_string(),
                    vec![(1000, 1.0), (2000, 3.0)]
                ),
                (
                    "{__name__=\"m\", job=\"b\"}".to_string(),
                    vec![(1000, 2.0), (2000, 4.0)]
                ),
            ]
        );
    }

    #[test]
    fn unsorted_labels_are_sorted_like_prometheus_does_and_empty_values_dropped() {
        let f = fixture();
        f.receiver
            .write_body(&body(vec![series(
                &[
                    ("zone", "z"),
                    ("empty", ""),
                    ("__name__", "m"),
                    ("job", "j"),
                ],
                &[(1000, 1.0)],
            )]))
            .unwrap();
        // The same series with its labels in order: one series, two samples.
        f.receiver
            .write_body(&body(vec![series(
                &[("__name__", "m"), ("job", "j"), ("zone", "z")],
                &[(2000, 2.0)],
            )]))
            .unwrap();
        assert_eq!(
            stored(&f.db, "m"),
            vec![(
                "{__name__=\"m\", job=\"j\", zone=\"z\"}".to_string(),
                vec![(1000, 1.0), (2000, 2.0)]
            )]
        );
    }

    #[test]
    fn invalid_labels_answer_400_and_append_nothing() {
        let f = fixture();
        let good = series(&[("__name__", "ok")], &[(1000, 1.0)]);
        let cases: Vec<(&str, prompb::TimeSeries, &str)> = vec![
            (
                "empty label name",
                series(&[("__name__", "m"), ("", "v")], &[(1000, 1.0)]),
                "invalid label name \"\" in series with labels [(\"__name__\", \"m\"), (\"\", \"v\")]",
            ),
            (
                "label name with a dash",
                series(&[("__name__", "m"), ("a-b", "v")], &[(1000, 1.0)]),
                "invalid label name \"a-b\"",
            ),
            (
                "duplicate label name",
                series(&[("job", "x"), ("__name__", "m"), ("job", "y")], &[(1000, 1.0)]),
                "duplicate label name \"job\" in series with labels",
            ),
            (
                "no metric name",
                series(&[("job", "x")], &[(1000, 1.0)]),
                "series {job=\"x\"} has no metric name",
            ),
            (
                "no labels",
                series(&[], &[(1000, 1.0)]),
                "series {} has no metric name",
            ),
            (
                "value too long",
                series(
                    &[("__name__", "m"), ("v", &"x".repeat(LABEL_STRING_LEN_MAX + 1))],
                    &[(1000, 1.0)],
                ),
                "label \"v\" in a series: name or value longer than",
            ),
        ];
        for (what, bad, want) in cases {
            let m = bad_request(f.receiver.write_body(&body(vec![good.clone(), bad])));
            assert!(m.starts_with(want), "{what}: {m}");
        }
        assert!(stored(&f.db, "ok").is_empty(), "a refused request appended");
    }

    #[test]
    fn malformed_bodies_answer_400() {
        let f = fixture();
        let req = prompb::WriteRequest {
            timeseries: vec![series(&[("__name__", "m"), ("a", "bc")], &[(1000, 1.0)])],
            metadata: vec![],
        };
        let raw = req.encode_to_vec();
        let compress = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();

        // Truncated protobuf, at every length that is not a field boundary.
        let mut refused = 0;
        for cut in 1..raw.len() {
            match f.receiver.write_body(&compress(&raw[..cut])) {
                Err(WriteError::BadRequest(m)) => {
                    assert!(m.starts_with("protobuf decode: "), "{m}");
                    refused += 1;
                }
                Ok(()) => {}
                Err(e) => panic!("cut at {cut}: {e:?}"),
            }
        }
        assert!(
            refused > raw.len() / 2,
            "only {refused} truncations refused"
        );

        // Invalid UTF-8 in a label value ("bc" is the last label's value).
        let mut bad = raw.clone();
        let at = bad.windows(2).position(|w| w == b"bc").unwrap();
        bad[at] = 0xc3;
        let m = bad_request(f.receiver.write_body(&compress(&bad)));
        assert_eq!(m, "protobuf decode: label value is not valid UTF-8");

        // Not snappy at all.
        let m = bad_request(f.receiver.write_body(b"\xff\xff\xff\xff\xff\xff"));
        assert!(m.starts_with("snappy decode: "), "{m}");
        assert!(stored(&f.db, "m").is_empty());
    }

    #[test]
    fn a_series_repeated_in_one_request_is_checked_against_itself() {
        let f = fixture();
        let a = [("__name__", "m")];
        // Older than the first copy's sample: refused, though the store has neither.
        let m = bad_request(f.receiver.write_body(&body(vec![
            series(&a, &[(2000, 1.0)]),
            series(&a, &[(1000, 1.0)]),
        ])));
        assert_eq!(m, "out of order sample");
        // An identical duplicate and a newer sample: accepted.
        f.receiver
            .write_body(&body(vec![
                series(&a, &[(2000, 1.0)]),
                series(&a, &[(2000, 1.0), (3000, 2.0)]),
            ]))
            .unwrap();
        assert_eq!(
            stored(&f.db, "m"),
            vec![(
                "{__name__=\"m\"}".to_string(),
                vec![(2000, 1.0), (3000, 2.0)]
            )]
        );
    }
}
