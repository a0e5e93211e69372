//! The `Query` gRPC service: a node's LOCAL storage read by the fan-out querier of
//! another node (`fanout`), plus the protobuf conversions both sides use.
//!
//! The service never fans out again, so a cluster query costs one hop. `Select`
//! reads its first batch in place and answers a selection that fits in it with
//! one message; a bigger one continues on the blocking pool (the
//! `storage::Querier` seam is synchronous) and streams series in batches; when the
//! client goes away the batch send fails and the read stops. Label lookups, which
//! read only the index, answer in place.
//!
//! A request may name the WAL groups it wants (`GroupFilter`): the fan-out reads
//! each group from one replica, so a node is then asked only for its pre-cluster
//! storage and the groups assigned to it (`GroupedStorage`).

use super::pb;
use crate::labels::{Labels, LabelsDecodeError, MatchType, Matcher};
use crate::storage::{Querier, Queryable, Sample, SelectHints, Series, SeriesSet, StorageError};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Most series in one `SelectResponse`.
const BATCH_SERIES_MAX: usize = 512;
/// Most samples in one `SelectResponse` (about 1 MiB encoded); a single longer
/// series still goes in one message.
const BATCH_SAMPLES_MAX: usize = 64 * 1024;
/// Batches buffered between the reading thread and the gRPC stream.
const BATCHES_BUFFERED_MAX: usize = 4;

/// A node's local storage read by WAL group: its pre-cluster storage plus the
/// named groups only.
#[tonic::async_trait]
pub trait GroupedStorage: Send + Sync {
    /// A querier over the pre-cluster storage and `groups`; an error naming the
    /// group when this node holds one of them no longer (or not yet).
    async fn querier_for_groups(
        &self,
        mint: i64,
        maxt: i64,
        groups: &[u64],
    ) -> Result<Box<dyn Querier>, StorageError>;
}

/// Serves `Select`, `LabelNames` and `LabelValues` from this node's local storage.
pub struct QueryService {
    /// The node's own storage (never the fan-out queryable).
    local: Arc<dyn Queryable>,
    /// The same storage by WAL group, for requests that name groups (none on a
    /// node without WAL groups: such a request is then refused).
    grouped: Option<Arc<dyn GroupedStorage>>,
}

impl QueryService {
    pub fn new(
        local: Arc<dyn Queryable>,
        grouped: Option<Arc<dyn GroupedStorage>>,
    ) -> QueryService {
        QueryService { local, grouped }
    }

    /// The tonic server for this service, ready to add to a router.
    pub fn server(local: Arc<dyn Queryable>) -> pb::query_server::QueryServer<QueryService> {
        QueryService::new(local, None).into_server()
    }

    /// This service as a tonic server, ready to add to a router.
    pub fn into_server(self) -> pb::query_server::QueryServer<QueryService> {
        pb::query_server::QueryServer::new(self).max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The querier a request asks for: every group held, or only those it names.
    async fn querier(
        &self,
        mint: i64,
        maxt: i64,
        groups: Option<&pb::GroupFilter>,
    ) -> Result<Box<dyn Querier>, Status> {
        match (groups, &self.grouped) {
            (None, _) => self.local.querier(mint, maxt).map_err(storage_status),
            (Some(f), Some(g)) => g
                .querier_for_groups(mint, maxt, &f.ids)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string())),
            (Some(f), None) => Err(Status::failed_precondition(format!(
                "WAL groups {:?} asked for, but this node holds no WAL groups",
                f.ids
            ))),
        }
    }
}

/// Largest message either side sends or accepts: one batch, or one very long series.
pub(crate) const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Matchers to protobuf.
pub(crate) fn matchers_to_pb(ms: &[Matcher]) -> Vec<pb::LabelMatcher> {
    ms.iter()
        .map(|m| pb::LabelMatcher {
            r#type: match m.kind {
                MatchType::Equal => pb::label_matcher::Type::Eq,
                MatchType::NotEqual => pb::label_matcher::Type::Neq,
                MatchType::Regexp => pb::label_matcher::Type::Re,
                MatchType::NotRegexp => pb::label_matcher::Type::Nre,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

/// Matchers from protobuf; a bad type or regex is the caller's error.
pub(crate) fn matchers_from_pb(ms: &[pb::LabelMatcher]) -> Result<Vec<Matcher>, Status> {
    ms.iter()
        .map(|m| {
            let kind = match pb::label_matcher::Type::try_from(m.r#type) {
                Ok(pb::label_matcher::Type::Eq) => MatchType::Equal,
                Ok(pb::label_matcher::Type::Neq) => MatchType::NotEqual,
                Ok(pb::label_matcher::Type::Re) => MatchType::Regexp,
                Ok(pb::label_matcher::Type::Nre) => MatchType::NotRegexp,
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "matcher for label {:?} has unknown type {}",
                        m.name, m.r#type
                    )))
                }
            };
            Matcher::new(kind, &m.name, &m.value)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect()
}

/// Bytes per sample on the wire: timestamp and value, 8 bytes each.
const SAMPLE_BYTES: usize = 16;

/// A series to protobuf with `samples` (all of the series' samples, some of
/// them, or none for the series API). The label set goes as its storage bytes and
/// the samples as fixed 16-byte pairs, so encoding is two copies and no per-label
/// allocation.
pub(crate) fn series_to_pb(s: &Series, samples: &[Sample]) -> pb::Series {
    let mut bytes = Vec::with_capacity(samples.len() * SAMPLE_BYTES);
    for p in samples {
        bytes.extend_from_slice(&p.t.to_le_bytes());
        bytes.extend_from_slice(&p.v.to_bits().to_le_bytes());
    }
    pb::Series {
        labels: s.labels.encoded().to_vec(),
        samples: bytes,
    }
}

/// The newest sample at or before `t` (a stale marker too), as a slice of zero
/// or one sample: all that an instant selector evaluated only at `t` reads.
fn newest_at(samples: &[Sample], t: i64) -> &[Sample] {
    let end = samples.partition_point(|p| p.t <= t);
    &samples[end.saturating_sub(1)..end]
}

/// Why a series from a peer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeriesDecodeError {
    #[error("series has a bad label set: {0}")]
    Labels(#[from] LabelsDecodeError),
    #[error("series {labels} has {bytes} bytes of samples, not a multiple of {SAMPLE_BYTES}")]
    Length { labels: String, bytes: usize },
    #[error("series {labels} has samples out of time order at {t_ms}")]
    Order { labels: String, t_ms: i64 },
}

/// A series from protobuf, checked: a well-formed label set (sorted, unique names,
/// no empty values, UTF-8), whole samples, strictly increasing timestamps.
pub(crate) fn series_from_pb(s: pb::Series) -> Result<Series, SeriesDecodeError> {
    let labels = Labels::from_encoded(&s.labels)?;
    if !s.samples.len().is_multiple_of(SAMPLE_BYTES) {
        return Err(SeriesDecodeError::Length {
            labels: labels.to_string(),
            bytes: s.samples.len(),
        });
    }
    let mut samples = Vec::with_capacity(s.samples.len() / SAMPLE_BYTES);
    let mut prev = i64::MIN;
    for (i, pair) in s.samples.chunks_exact(SAMPLE_BYTES).enumerate() {
        let (t, v) = pair.split_at(8);
        let t = i64::from_le_bytes(t.try_into().unwrap_or_default());
        let v = f64::from_bits(u64::from_le_bytes(v.try_into().unwrap_or_default()));
        if i > 0 && t <= prev {
            return Err(SeriesDecodeError::Order {
                labels: labels.to_string(),
                t_ms: t,
            });
        }
        prev = t;
        samples.push(Sample { t, v });
    }
    Ok(Series::new(labels, samples))
}

fn storage_status(e: StorageError) -> Status {
    Status::internal(e.to_string())
}

/// A `Select` answer being built: batches of at most `BATCH_SERIES_MAX` series
/// or about `BATCH_SAMPLES_MAX` samples.
struct Batcher {
    series_only: bool,
    /// `Some(t)`: send only each series' newest sample at or before `t`
    /// (`SelectHints::newest_only`).
    newest_at: Option<i64>,
    batch: pb::SelectResponse,
    samples: usize,
}

impl Batcher {
    fn new(hints: &SelectHints) -> Batcher {
        Batcher {
            series_only: hints.series_only,
            newest_at: hints.newest_only.then_some(hints.end_ms),
            batch: pb::SelectResponse::default(),
            samples: 0,
        }
    }

    /// Adds `s`; returns a full batch when this one is full.
    fn push(&mut self, s: &Series) -> Option<pb::SelectResponse> {
        let samples = match (self.series_only, self.newest_at) {
            (true, _) => &[][..],
            (false, Some(t)) => newest_at(&s.samples, t),
            (false, None) => &s.samples[..],
        };
        self.samples += samples.len();
        self.batch.series.push(series_to_pb(s, samples));
        if self.batch.series.len() >= BATCH_SERIES_MAX || self.samples >= BATCH_SAMPLES_MAX {
            self.samples = 0;
            return Some(std::mem::take(&mut self.batch));
        }
        None
    }

    /// The last, partly filled batch, if any.
    fn finish(self) -> Option<pb::SelectResponse> {
        (!self.batch.series.is_empty()).then_some(self.batch)
    }
}

/// Reads the rest of `set` on the blocking pool and sends batches into `tx` until
/// done, an error (sent as the stream's last item) or the receiver going away.
fn stream_rest(
    set: SeriesSet,
    mut batcher: Batcher,
    tx: tokio::sync::mpsc::Sender<Result<pb::SelectResponse, Status>>,
) {
    for s in set {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.blocking_send(Err(storage_status(e)));
                return;
            }
        };
        if let Some(full) = batcher.push(&s) {
            if tx.blocking_send(Ok(full)).is_err() {
                return; // The client went away.
            }
        }
    }
    if let Some(last) = batcher.finish() {
        let _ = tx.blocking_send(Ok(last));
    }
}

/// The `Select` stream: one message ready at once, or batches from a reader.
type SelectStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SelectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    type SelectStream = SelectStream;

    /// A selection that fits one batch (one series of a dashboard panel, a
    /// `count` over a few hundred series) is read here, on the gRPC task, and
    /// answered in one message: the blocking-pool hop and the channel cost more
    /// than such a read. A bigger one continues on the blocking pool from where the
    /// first batch ended, so a runtime worker is never held for longer than one
    /// batch's read.
    async fn select(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<Self::SelectStream>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        let querier = self
            .querier(req.min_time_ms, req.max_time_ms, req.groups.as_ref())
            .await?;
        let hints = SelectHints {
            start_ms: req.hint_start_ms,
            end_ms: req.hint_end_ms,
            series_only: req.series_only,
            newest_only: req.newest_only,
        };
        let mut set = querier.select(&hints, &matchers).map_err(storage_status)?;
        let mut batcher = Batcher::new(&hints);
        let first = loop {
            match set.next() {
                None => {
                    let last = batcher.finish().into_iter().map(Ok);
                    return Ok(Response::new(Box::pin(tokio_stream::iter(last))));
                }
                Some(Err(e)) => return Err(storage_status(e)),
                Some(Ok(s)) => {
                    if let Some(full) = batcher.push(&s) {
                        break full;
                    }
                }
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_BUFFERED_MAX);
        // Capacity is at least one, so the first batch always fits.
        let _ = tx.try_send(Ok(first));
        tokio::task::spawn_blocking(move || {
            // The querier outlives its series set.
            let _querier = querier;
            stream_rest(set, batcher, tx)
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn label_names(
        &self,
        req: Request<pb::LabelNamesRequest>,
    ) -> Result<Response<pb::LabelNamesResponse>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        // Answered in place: a label lookup reads the index only and is short, so
        // a hop to the blocking pool would cost more than it saves.
        let names = self
            .querier(req.min_time_ms, req.max_time_ms, req.groups.as_ref())
            .await?
            .label_names(&matchers)
            .map_err(storage_status)?;
        Ok(Response::new(pb::LabelNamesResponse { names }))
    }

    async fn label_values(
        &self,
        req: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::LabelValuesResponse>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        // Answered in place, like `label_names`.
        let values = self
            .querier(req.min_time_ms, req.max_time_ms, req.groups.as_ref())
            .await?
            .label_values(&req.name, &matchers)
            .map_err(storage_status)?;
        Ok(Response::new(pb::LabelValuesResponse { values }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn series_round_trip(
            pairs in proptest::collection::btree_map("[a-z_]{1,8}", ".{0,8}", 0..5),
            ts in proptest::collection::btree_set(any::<i64>(), 0..50),
            bits in any::<u64>(),
        ) {
            let pairs: Vec<(String, String)> = pairs.into_iter().collect();
            let s = Series {
                labels: Labels::from_pairs(&pairs),
                samples: ts.iter().enumerate().map(|(i, &t)| Sample {
                    t,
                    v: f64::from_bits(bits.wrapping_add(i as u64)),
                }).collect(),
                start_times: Vec::new(),
            };
            let back = series_from_pb(series_to_pb(&s, &s.samples)).unwrap();
            prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn newest_only_sends_one_sample_per_series() {
        let s = Series::new(
            Labels::from_pairs(&[("a", "1")]),
            [1000, 2000, 3000]
                .iter()
                .map(|&t| Sample { t, v: t as f64 })
                .collect(),
        );
        let sent = |hints: &SelectHints| {
            let mut b = Batcher::new(hints);
            assert!(b.push(&s).is_none());
            let batch = b.finish().expect("one batch");
            series_from_pb(batch.series[0].clone()).unwrap().samples
        };
        let mut hints = SelectHints {
            start_ms: 0,
            end_ms: 2500,
            series_only: false,
            newest_only: false,
        };
        assert_eq!(sent(&hints).len(), 3);
        hints.newest_only = true;
        assert_eq!(sent(&hints), [Sample { t: 2000, v: 2000.0 }]);
        hints.end_ms = 500;
        assert!(sent(&hints).is_empty());
        hints.series_only = true;
        hints.end_ms = 2500;
        assert!(sent(&hints).is_empty());
    }

    #[test]
    fn bad_series_are_refused() {
        let labels = Labels::from_pairs(&[("a", "1")]).encoded().to_vec();
        let pair = |t: i64| {
            let mut b = t.to_le_bytes().to_vec();
            b.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
            b
        };
        let s = pb::Series {
            labels: labels.clone(),
            samples: pair(1)[..15].to_vec(),
        };
        assert!(matches!(
            series_from_pb(s),
            Err(SeriesDecodeError::Length { bytes: 15, .. })
        ));
        let s = pb::Series {
            labels: labels.clone(),
            samples: [pair(2), pair(2)].concat(),
        };
        assert!(matches!(
            series_from_pb(s),
            Err(SeriesDecodeError::Order { t_ms: 2, .. })
        ));
        let s = pb::Series {
            labels: b"\x01b\x011\x01a\x011".to_vec(),
            samples: pair(1),
        };
        assert!(matches!(
            series_from_pb(s),
            Err(SeriesDecodeError::Labels(LabelsDecodeError::Order { .. }))
        ));
    }

    #[test]
    fn matchers_round_trip() {
        let ms = vec![
            Matcher::equal("a", "1"),
            Matcher::new(MatchType::NotEqual, "b", "2").unwrap(),
            Matcher::new(MatchType::Regexp, "c", "x|y").unwrap(),
            Matcher::new(MatchType::NotRegexp, "d", ".+").unwrap(),
        ];
        assert_eq!(matchers_from_pb(&matchers_to_pb(&ms)).unwrap(), ms);
        let bad = vec![pb::LabelMatcher {
            r#type: 2,
            name: "x".into(),
            value: "(".into(),
        }];
        assert!(matchers_from_pb(&bad).is_err());
    }
}
