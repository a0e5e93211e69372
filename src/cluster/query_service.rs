//! The `Query` gRPC service: a node's LOCAL storage read by the fan-out querier of
//! another node (`fanout`), plus the protobuf conversions both sides use.
//!
//! The service never fans out again, so a cluster query costs one hop. Reads run on
//! the blocking pool (the `storage::Querier` seam is synchronous) and stream series
//! in batches; when the client goes away the batch send fails and the read stops.

use super::pb;
use crate::labels::{Label, Labels, MatchType, Matcher, LABEL_STRING_LEN_MAX};
use crate::storage::{Queryable, Sample, SelectHints, Series, StorageError};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Most series in one `SelectResponse`.
const BATCH_SERIES_MAX: usize = 512;
/// Most samples in one `SelectResponse` (about 1 MiB encoded); a single longer
/// series still goes in one message.
const BATCH_SAMPLES_MAX: usize = 64 * 1024;
/// Batches buffered between the reading thread and the gRPC stream.
const BATCHES_BUFFERED_MAX: usize = 4;

/// Serves `Select`, `LabelNames` and `LabelValues` from this node's local storage.
pub struct QueryService {
    /// The node's own storage (never the fan-out queryable).
    local: Arc<dyn Queryable>,
}

impl QueryService {
    pub fn new(local: Arc<dyn Queryable>) -> QueryService {
        QueryService { local }
    }

    /// The tonic server for this service, ready to add to a router.
    pub fn server(local: Arc<dyn Queryable>) -> pb::query_server::QueryServer<QueryService> {
        pb::query_server::QueryServer::new(QueryService::new(local))
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
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

/// A series to protobuf; `series_only` leaves the samples out.
pub(crate) fn series_to_pb(s: &Series, series_only: bool) -> pb::Series {
    let (timestamps_ms, values) = if series_only {
        (Vec::new(), Vec::new())
    } else {
        (
            s.samples.iter().map(|p| p.t).collect(),
            s.samples.iter().map(|p| p.v).collect(),
        )
    };
    pb::Series {
        labels: s
            .labels
            .iter()
            .map(|l| pb::Label {
                name: l.name.to_string(),
                value: l.value.to_string(),
            })
            .collect(),
        timestamps_ms,
        values,
    }
}

/// Why a series from a peer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeriesDecodeError {
    #[error("series {labels} has {timestamps} timestamps but {values} values")]
    Lengths {
        labels: String,
        timestamps: usize,
        values: usize,
    },
    #[error("series {labels} has samples out of time order at {t_ms}")]
    Order { labels: String, t_ms: i64 },
    #[error("label {name:?} has a name or value longer than {LABEL_STRING_LEN_MAX} bytes")]
    LabelTooLong { name: String },
}

/// A series from protobuf, checked: parallel arrays of equal length, time order.
pub(crate) fn series_from_pb(s: pb::Series) -> Result<Series, SeriesDecodeError> {
    if let Some(l) = s
        .labels
        .iter()
        .find(|l| l.name.len().max(l.value.len()) > LABEL_STRING_LEN_MAX)
    {
        return Err(SeriesDecodeError::LabelTooLong {
            name: l.name.chars().take(64).collect(),
        });
    }
    // A peer sends label sets as its storage holds them: sorted, unique names, no
    // empty values. Those are taken as they are; anything else is normalised.
    let canonical = s.labels.windows(2).all(|w| w[0].name < w[1].name)
        && s.labels.iter().all(|l| !l.value.is_empty());
    let labels = if canonical {
        Labels::from_sorted(s.labels.iter().map(|l| Label {
            name: l.name.as_str(),
            value: l.value.as_str(),
        }))
    } else {
        let pairs: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        Labels::from_pairs(&pairs)
    };
    if s.timestamps_ms.len() != s.values.len() {
        return Err(SeriesDecodeError::Lengths {
            labels: labels.to_string(),
            timestamps: s.timestamps_ms.len(),
            values: s.values.len(),
        });
    }
    if let Some(w) = s.timestamps_ms.windows(2).find(|w| w[0] >= w[1]) {
        return Err(SeriesDecodeError::Order {
            labels: labels.to_string(),
            t_ms: w[1],
        });
    }
    let samples = s
        .timestamps_ms
        .into_iter()
        .zip(s.values)
        .map(|(t, v)| Sample { t, v })
        .collect();
    Ok(Series { labels, samples })
}

fn storage_status(e: StorageError) -> Status {
    Status::internal(e.to_string())
}

/// Reads `select` on the blocking pool and sends batches into `tx` until done, an
/// error (sent as the stream's last item) or the receiver going away.
fn stream_select(
    local: Arc<dyn Queryable>,
    req: pb::SelectRequest,
    matchers: Vec<Matcher>,
    tx: tokio::sync::mpsc::Sender<Result<pb::SelectResponse, Status>>,
) {
    let run = || -> Result<(), Status> {
        let querier = local
            .querier(req.min_time_ms, req.max_time_ms)
            .map_err(storage_status)?;
        let hints = SelectHints {
            start_ms: req.hint_start_ms,
            end_ms: req.hint_end_ms,
            series_only: req.series_only,
        };
        let mut batch = pb::SelectResponse::default();
        let mut samples = 0usize;
        for s in querier.select(&hints, &matchers).map_err(storage_status)? {
            let s = s.map_err(storage_status)?;
            samples += if req.series_only { 0 } else { s.samples.len() };
            batch.series.push(series_to_pb(&s, req.series_only));
            if batch.series.len() >= BATCH_SERIES_MAX || samples >= BATCH_SAMPLES_MAX {
                if tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(()); // The client went away.
                }
                samples = 0;
            }
        }
        if !batch.series.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
        Ok(())
    };
    if let Err(status) = run() {
        let _ = tx.blocking_send(Err(status));
    }
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    type SelectStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SelectResponse, Status>>;

    async fn select(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<Self::SelectStream>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_BUFFERED_MAX);
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || stream_select(local, req, matchers, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn label_names(
        &self,
        req: Request<pb::LabelNamesRequest>,
    ) -> Result<Response<pb::LabelNamesResponse>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        let local = self.local.clone();
        let names = tokio::task::spawn_blocking(move || {
            local
                .querier(req.min_time_ms, req.max_time_ms)?
                .label_names(&matchers)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(storage_status)?;
        Ok(Response::new(pb::LabelNamesResponse { names }))
    }

    async fn label_values(
        &self,
        req: Request<pb::LabelValuesRequest>,
    ) -> Result<Response<pb::LabelValuesResponse>, Status> {
        let req = req.into_inner();
        let matchers = matchers_from_pb(&req.matchers)?;
        let local = self.local.clone();
        let values = tokio::task::spawn_blocking(move || {
            local
                .querier(req.min_time_ms, req.max_time_ms)?
                .label_values(&req.name, &matchers)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
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
            };
            let back = series_from_pb(series_to_pb(&s, false)).unwrap();
            prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn bad_series_are_refused() {
        let s = pb::Series {
            labels: vec![],
            timestamps_ms: vec![1, 2],
            values: vec![1.0],
        };
        assert!(matches!(
            series_from_pb(s),
            Err(SeriesDecodeError::Lengths { .. })
        ));
        let s = pb::Series {
            labels: vec![],
            timestamps_ms: vec![2, 2],
            values: vec![1.0, 1.0],
        };
        assert!(matches!(
            series_from_pb(s),
            Err(SeriesDecodeError::Order { .. })
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
