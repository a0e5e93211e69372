//! The sample batch a WAL group entry carries (`docs/format/wal-group-entry.md`).
//! Version 1 is self-contained (label sets, not series refs): the appender encodes
//! it, and a write forwarded to the group's leader carries it. Version 2 is what the
//! leader logs: it names each series by a per-group id, defined once (with the label
//! set) by the first entry that uses it, so later entries carry only the id and the
//! samples; every replica's state machine learns the ids by applying entries.
//! A retirement entry (kind 3) retires ids the leader found unused, so the id
//! table does not keep every series the group ever saw.

use crate::encoding::{put_uvarint, put_varint, DecodeError, Decoder};
use crate::labels::{Labels, LabelsDecodeError};
use crate::storage::Sample;

/// The format version of self-contained batches, the batch's first byte.
const VERSION: u8 = 1;
/// The format version of batches that name series by id.
const VERSION_IDS: u8 = 2;
/// The kind byte of a retirement entry: the first byte of every command tells
/// its kind, and batches took 1 and 2 as their versions.
const KIND_RETIRE: u8 = 3;
/// Most ids one retirement entry may retire, so an entry stays small (at most
/// about 5 bytes per id) and applying one holds the id table briefly.
pub const RETIRE_IDS_MAX: usize = 1 << 16;
/// Most series one batch may hold; a larger count is corruption, not data.
pub const BATCH_SERIES_MAX: u64 = 1 << 24;
/// Largest series id a version 2 batch may name.
pub const SERIES_ID_MAX: u64 = u32::MAX as u64;

/// A batch that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("wal batch: unknown format version {0}")]
    Version(u8),
    #[error("wal batch: {0}")]
    Decode(#[from] DecodeError),
    #[error("wal batch: {what} count {count} exceeds the {left} bytes left")]
    Count {
        what: &'static str,
        count: u64,
        left: usize,
    },
    #[error("wal batch: {0}")]
    Labels(#[from] LabelsDecodeError),
    #[error("wal batch: {0} trailing bytes")]
    Trailing(usize),
    #[error("wal batch: series id {0} exceeds the largest allowed")]
    IdRange(u64),
    #[error("wal batch: version 2 names series by ids, which only a group's id table resolves")]
    NeedsIds,
    #[error("wal batch: a retirement entry is not a sample batch")]
    NotBatch,
    #[error("retirement entry: {0}")]
    Retirement(String),
}

/// One series of a batch and its samples, in the order appended.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSeries {
    pub labels: Labels,
    pub samples: BatchSamples,
}

/// A series' samples in a batch: nearly always one (a scrape or a remote-write
/// request has one sample per series), kept inline so that building a batch of
/// thousands of series does not allocate for each.
pub type BatchSamples = smallvec::SmallVec<[Sample; 1]>;

/// Encodes `series` as one batch.
pub fn encode(series: &[BatchSeries]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + series.len() * 64);
    buf.push(VERSION);
    put_uvarint(&mut buf, series.len() as u64);
    for s in series {
        // The label pairs are written as `Labels` stores them (uvarint length and
        // bytes, name then value, sorted by name), so they are copied as they are.
        put_uvarint(&mut buf, s.labels.iter_bytes().count() as u64);
        buf.extend_from_slice(s.labels.encoded());
        put_samples(&mut buf, &s.samples);
    }
    buf
}

fn put_samples(buf: &mut Vec<u8>, samples: &[Sample]) {
    put_uvarint(buf, samples.len() as u64);
    let mut prev = 0i64;
    for smp in samples {
        put_varint(buf, smp.t.wrapping_sub(prev));
        prev = smp.t;
        buf.extend_from_slice(&smp.v.to_bits().to_le_bytes());
    }
}

/// One series of a version 2 batch: its id in the group, its label set when this
/// batch defines the id, and its samples.
#[derive(Debug, Clone, Copy)]
pub struct IdSeries<'a> {
    pub id: u32,
    pub define: Option<&'a Labels>,
    pub samples: &'a [Sample],
}

/// Encodes `series` as one version 2 batch, whose ids were assigned by the group's
/// leader in Raft term `term` (a replica applies it only from an entry of that
/// term: docs/format/wal-group-entry.md).
pub fn encode_ids(term: u64, series: &[IdSeries<'_>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + series.len() * 16);
    buf.push(VERSION_IDS);
    put_uvarint(&mut buf, term);
    put_uvarint(&mut buf, series.len() as u64);
    for s in series {
        put_uvarint(
            &mut buf,
            (u64::from(s.id) << 1) | u64::from(s.define.is_some()),
        );
        if let Some(l) = s.define {
            put_uvarint(&mut buf, l.iter_bytes().count() as u64);
            buf.extend_from_slice(l.encoded());
        }
        put_samples(&mut buf, s.samples);
    }
    buf
}

/// Checks a count read from the batch against the bytes left, each item taking at
/// least `min_bytes`, so a corrupt count cannot make us allocate without bound.
fn count(d: &mut Decoder<'_>, what: &'static str, min_bytes: usize) -> Result<usize, BatchError> {
    let n = d.uvarint()?;
    let left = d.remaining();
    if n > (left / min_bytes) as u64 || n > BATCH_SERIES_MAX * 1024 {
        return Err(BatchError::Count {
            what,
            count: n,
            left,
        });
    }
    Ok(n as usize)
}

/// A decoded batch whose label sets are still bytes of the batch, so a replica
/// that knows a series by those bytes (`Labels::encoded`) skips building it.
#[derive(Debug, Clone, Default)]
pub struct BatchView<'a> {
    /// For a version 2 batch, the Raft term its ids were assigned in.
    pub ids_term: Option<u64>,
    pub series: Vec<ViewSeries<'a>>,
    pub samples: Vec<Sample>,
}

/// One series of a `BatchView`.
#[derive(Debug, Clone)]
pub struct ViewSeries<'a> {
    /// Its id (version 2 only).
    pub id: Option<u32>,
    /// Its label pairs, unchecked (`labels` checks them): always in version 1,
    /// only where the batch defines the id in version 2.
    pub labels: Option<&'a [u8]>,
    /// Its samples, in `BatchView::samples`.
    pub samples: std::ops::Range<usize>,
}

/// The label set of one series of a `BatchView`, checked (UTF-8, sorted, unique,
/// no empty value).
pub fn labels(encoded: &[u8]) -> Result<Labels, BatchError> {
    Ok(Labels::from_encoded(encoded)?)
}

/// Decodes a batch written by `encode` or `encode_ids`, leaving label sets as
/// bytes.
pub fn decode_view(b: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let mut d = Decoder::new(b);
    let version = d.u8()?;
    let ids_term = match version {
        VERSION => None,
        VERSION_IDS => Some(d.uvarint()?),
        KIND_RETIRE => return Err(BatchError::NotBatch),
        v => return Err(BatchError::Version(v)),
    };
    // A series takes at least two bytes (two zero counts, or an id and a count).
    let n = count(&mut d, "series", 2)?;
    let mut out = BatchView {
        ids_term,
        series: Vec::with_capacity(n),
        samples: Vec::new(),
    };
    for _ in 0..n {
        let (id, has_labels) = match ids_term {
            None => (None, true),
            Some(_) => {
                let r = d.uvarint()?;
                let id = r >> 1;
                if id > SERIES_ID_MAX {
                    return Err(BatchError::IdRange(id));
                }
                (Some(id as u32), r & 1 == 1)
            }
        };
        let labels = if has_labels {
            let nl = count(&mut d, "label", 2)?;
            // The pairs are `Labels::encoded` bytes: only delimited here.
            let start = d.position();
            for _ in 0..2 * nl {
                let n = d.uvarint()?;
                d.bytes(usize::try_from(n).unwrap_or(usize::MAX))?;
            }
            Some(&b[start..d.position()])
        } else {
            None
        };
        let ns = count(&mut d, "sample", 9)?;
        let first = out.samples.len();
        out.samples.reserve(ns);
        let mut prev = 0i64;
        for _ in 0..ns {
            let t = prev.wrapping_add(d.varint()?);
            prev = t;
            let raw = d.bytes(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(raw);
            out.samples.push(Sample {
                t,
                v: f64::from_bits(u64::from_le_bytes(a)),
            });
        }
        out.series.push(ViewSeries {
            id,
            labels,
            samples: first..out.samples.len(),
        });
    }
    if !d.is_empty() {
        return Err(BatchError::Trailing(d.remaining()));
    }
    Ok(out)
}

/// One command of a WAL group entry, told apart by its first byte.
#[derive(Debug, Clone)]
pub enum Command<'a> {
    /// A sample batch (kind 1 or 2: the batch's version).
    Batch(BatchView<'a>),
    /// A retirement entry (kind 3).
    Retire(Retirement),
}

/// Series ids the group's leader retired in Raft term `term`: they name no series
/// any more and are never assigned again (docs/format/wal-group-entry.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub term: u64,
    /// Sorted, without repeats; 1 to `RETIRE_IDS_MAX` of them.
    pub ids: Vec<u32>,
}

/// Encodes a retirement of `ids` by the leader of term `term`: the kind byte, the
/// term, the id count, then the first id and each id's difference to the one
/// before it (uvarints).
///
/// `ids` must be sorted, without repeats, and hold 1 to `RETIRE_IDS_MAX` ids: the
/// leader builds it that way, so anything else is a bug here.
pub fn encode_retire(term: u64, ids: &[u32]) -> Vec<u8> {
    assert!(
        !ids.is_empty() && ids.len() <= RETIRE_IDS_MAX,
        "a retirement holds 1 to {RETIRE_IDS_MAX} ids, not {}",
        ids.len()
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "retired ids must be sorted and unique"
    );
    let mut buf = Vec::with_capacity(16 + ids.len() * 2);
    buf.push(KIND_RETIRE);
    put_uvarint(&mut buf, term);
    put_uvarint(&mut buf, ids.len() as u64);
    let mut prev = 0u32;
    for (i, &id) in ids.iter().enumerate() {
        let delta = if i == 0 { id } else { id - prev };
        put_uvarint(&mut buf, u64::from(delta));
        prev = id;
    }
    buf
}

/// Decodes the retirement entry `b` (kind byte included), refusing an id count of
/// 0 or past `RETIRE_IDS_MAX` or the bytes left, ids out of order or repeated
/// (a difference of 0), ids past `SERIES_ID_MAX`, and trailing bytes.
fn decode_retire(b: &[u8]) -> Result<Retirement, BatchError> {
    let bad = |why: String| BatchError::Retirement(why);
    let mut d = Decoder::new(b);
    if d.u8()? != KIND_RETIRE {
        return Err(bad("not a retirement entry".into()));
    }
    let term = d.uvarint()?;
    let n = d.uvarint()?;
    if n == 0 || n > RETIRE_IDS_MAX as u64 || n > d.remaining() as u64 {
        return Err(bad(format!(
            "id count {n} is not between 1 and {RETIRE_IDS_MAX}, or exceeds the {} bytes left",
            d.remaining()
        )));
    }
    let mut ids = Vec::with_capacity(n as usize);
    let mut prev = 0u64;
    for i in 0..n {
        let delta = d.uvarint()?;
        if i > 0 && delta == 0 {
            return Err(bad(format!("id {prev} is repeated")));
        }
        let id = prev.saturating_add(delta);
        if id > SERIES_ID_MAX {
            return Err(BatchError::IdRange(id));
        }
        ids.push(id as u32);
        prev = id;
    }
    if !d.is_empty() {
        return Err(BatchError::Trailing(d.remaining()));
    }
    Ok(Retirement { term, ids })
}

/// Decodes one WAL group command: a sample batch (`decode_view`) or a
/// retirement entry, by its first byte.
pub fn decode_command(b: &[u8]) -> Result<Command<'_>, BatchError> {
    match b.first() {
        Some(&KIND_RETIRE) => Ok(Command::Retire(decode_retire(b)?)),
        _ => Ok(Command::Batch(decode_view(b)?)),
    }
}

/// Decodes a self-contained (version 1) batch written by `encode`; a version 2
/// batch is refused, its ids meaning nothing without the group's id table.
pub fn decode(b: &[u8]) -> Result<Vec<BatchSeries>, BatchError> {
    let view = decode_view(b)?;
    if view.ids_term.is_some() {
        return Err(BatchError::NeedsIds);
    }
    view.series
        .iter()
        .map(|s| {
            Ok(BatchSeries {
                labels: labels(s.labels.unwrap_or_default())?,
                samples: BatchSamples::from_slice(&view.samples[s.samples.clone()]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_series() -> impl Strategy<Value = BatchSeries> {
        (
            proptest::collection::btree_map("[a-z_]{1,6}", "[a-zA-Z0-9 é]{1,6}", 1..4),
            proptest::collection::vec((any::<i64>(), any::<u64>()), 0..20),
        )
            .prop_map(|(labels, samples)| BatchSeries {
                labels: Labels::from_pairs(&labels.into_iter().collect::<Vec<_>>()),
                samples: samples
                    .into_iter()
                    .map(|(t, v)| Sample {
                        t,
                        v: f64::from_bits(v),
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip_bit_for_bit(series in proptest::collection::vec(arb_series(), 0..6)) {
            let back = decode(&encode(&series)).unwrap();
            prop_assert_eq!(back, series);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncated_batches_are_errors(series in proptest::collection::vec(arb_series(), 1..4), cut in 1usize..40) {
            let b = encode(&series);
            let cut = cut.min(b.len() - 1);
            prop_assert!(decode(&b[..b.len() - cut]).is_err());
        }
    }

    fn arb_id_series() -> impl Strategy<Value = (u32, bool, BatchSeries)> {
        (any::<u32>(), any::<bool>(), arb_series())
    }

    proptest! {
        #[test]
        fn id_batches_round_trip(term in any::<u64>(), series in proptest::collection::vec(arb_id_series(), 0..6)) {
            let named: Vec<IdSeries<'_>> = series
                .iter()
                .map(|(id, define, s)| IdSeries {
                    id: *id,
                    define: define.then_some(&s.labels),
                    samples: &s.samples,
                })
                .collect();
            let b = encode_ids(term, &named);
            let view = decode_view(&b).unwrap();
            prop_assert_eq!(view.ids_term, Some(term));
            prop_assert_eq!(view.series.len(), series.len());
            for (v, (id, define, s)) in view.series.iter().zip(&series) {
                prop_assert_eq!(v.id, Some(*id));
                prop_assert_eq!(v.labels, define.then_some(s.labels.encoded()));
                prop_assert_eq!(&view.samples[v.samples.clone()], &s.samples[..]);
            }
            // Ids mean nothing without the group's table.
            prop_assert!(matches!(decode(&b), Err(BatchError::NeedsIds)));
            for cut in 1..b.len().min(12) {
                prop_assert!(decode_view(&b[..b.len() - cut]).is_err());
            }
        }
    }

    #[test]
    fn an_id_past_the_largest_is_refused() {
        let mut b = vec![VERSION_IDS];
        put_uvarint(&mut b, 1);
        put_uvarint(&mut b, 1);
        put_uvarint(&mut b, (SERIES_ID_MAX + 1) << 1);
        put_uvarint(&mut b, 0);
        let e = decode_view(&b).unwrap_err();
        assert!(matches!(e, BatchError::IdRange(_)), "{e}");
    }

    proptest! {
        #[test]
        fn retirements_round_trip(term in any::<u64>(), ids in proptest::collection::btree_set(any::<u32>(), 1..300)) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let b = encode_retire(term, &ids);
            match decode_command(&b).unwrap() {
                Command::Retire(r) => prop_assert_eq!(r, Retirement { term, ids }),
                Command::Batch(_) => prop_assert!(false, "decoded as a batch"),
            }
            for cut in 1..b.len() {
                prop_assert!(decode_command(&b[..b.len() - cut]).is_err());
            }
            // Not a sample batch.
            prop_assert!(matches!(decode_view(&b), Err(BatchError::NotBatch)));
        }

        #[test]
        fn garbage_commands_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_command(&bytes);
            let mut retire = vec![KIND_RETIRE];
            retire.extend_from_slice(&bytes);
            let _ = decode_command(&retire);
        }
    }

    #[test]
    fn retirement_ids_are_delta_encoded() {
        let b = encode_retire(7, &[5, 6, 300]);
        // Kind, term, count, 5, +1, +294 (two bytes).
        assert_eq!(b, vec![3, 7, 3, 5, 1, 0xa6, 0x02]);
    }

    #[test]
    fn bad_retirements_are_refused() {
        let retire = |term: u64, count: u64, deltas: &[u64]| {
            let mut b = vec![KIND_RETIRE];
            put_uvarint(&mut b, term);
            put_uvarint(&mut b, count);
            for &d in deltas {
                put_uvarint(&mut b, d);
            }
            b
        };
        let cases = [
            ("empty", retire(1, 0, &[])),
            ("repeated", retire(1, 2, &[4, 0])),
            (
                "too many",
                retire(1, RETIRE_IDS_MAX as u64 + 1, &[1; 70_000]),
            ),
            ("count past the bytes", retire(1, 1000, &[1, 1])),
            (
                "past the largest id",
                retire(1, 2, &[u64::from(u32::MAX), 1]),
            ),
            ("trailing", {
                let mut b = retire(1, 1, &[1]);
                b.push(0);
                b
            }),
            ("torn", retire(1, 1, &[])),
        ];
        for (what, b) in cases {
            assert!(decode_command(&b).is_err(), "{what}");
        }
        // The most ids an entry may carry decode.
        let ids: Vec<u32> = (0..RETIRE_IDS_MAX as u32).collect();
        assert!(decode_command(&encode_retire(1, &ids)).is_ok());
    }

    #[test]
    fn stale_marker_survives() {
        let s = vec![BatchSeries {
            labels: Labels::from_pairs(&[("__name__", "up")]),
            samples: smallvec::smallvec![Sample {
                t: 5,
                v: crate::storage::stale_nan(),
            }],
        }];
        let back = decode(&encode(&s)).unwrap();
        assert!(crate::storage::is_stale_nan(back[0].samples[0].v));
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut b = vec![VERSION];
        put_uvarint(&mut b, u64::MAX / 2);
        let e = decode(&b).unwrap_err();
        assert!(e.to_string().contains("series count"), "{e}");
    }
}
