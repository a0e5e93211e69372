//! The sample batch a WAL group entry carries (`docs/format/wal-group-entry.md`):
//! self-contained (label sets, not series refs, so any replica applies it into its
//! own TSDB without shared state), encoded once by the appender and decoded by every
//! replica's state machine.

use crate::encoding::{put_uvarint, put_varint, DecodeError, Decoder};
use crate::labels::{Labels, LabelsDecodeError};
use crate::storage::Sample;

/// The format version, the batch's first byte.
const VERSION: u8 = 1;
/// Most series one batch may hold; a larger count is corruption, not data.
pub const BATCH_SERIES_MAX: u64 = 1 << 24;

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
}

/// One series of a batch and its samples, in the order appended.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

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
        put_uvarint(&mut buf, s.samples.len() as u64);
        let mut prev = 0i64;
        for smp in &s.samples {
            put_varint(&mut buf, smp.t.wrapping_sub(prev));
            prev = smp.t;
            buf.extend_from_slice(&smp.v.to_bits().to_le_bytes());
        }
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
    /// Each series' label pairs, unchecked (`labels` checks them), and its
    /// samples in `samples`.
    pub series: Vec<(&'a [u8], std::ops::Range<usize>)>,
    pub samples: Vec<Sample>,
}

/// The label set of one series of a `BatchView`, checked (UTF-8, sorted, unique,
/// no empty value).
pub fn labels(encoded: &[u8]) -> Result<Labels, BatchError> {
    Ok(Labels::from_encoded(encoded)?)
}

/// Decodes a batch written by `encode`, leaving label sets as bytes.
pub fn decode_view(b: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let mut d = Decoder::new(b);
    let version = d.u8()?;
    if version != VERSION {
        return Err(BatchError::Version(version));
    }
    // A series takes at least two bytes (two zero counts).
    let n = count(&mut d, "series", 2)?;
    let mut out = BatchView {
        series: Vec::with_capacity(n),
        samples: Vec::new(),
    };
    for _ in 0..n {
        let nl = count(&mut d, "label", 2)?;
        // The pairs are `Labels::encoded` bytes: only delimited here.
        let start = d.position();
        for _ in 0..2 * nl {
            let n = d.uvarint()?;
            d.bytes(usize::try_from(n).unwrap_or(usize::MAX))?;
        }
        let labels = &b[start..d.position()];
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
        out.series.push((labels, first..out.samples.len()));
    }
    if !d.is_empty() {
        return Err(BatchError::Trailing(d.remaining()));
    }
    Ok(out)
}

/// Decodes a batch written by `encode`.
pub fn decode(b: &[u8]) -> Result<Vec<BatchSeries>, BatchError> {
    let view = decode_view(b)?;
    view.series
        .iter()
        .map(|(l, r)| {
            Ok(BatchSeries {
                labels: labels(l)?,
                samples: view.samples[r.clone()].to_vec(),
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

    #[test]
    fn stale_marker_survives() {
        let s = vec![BatchSeries {
            labels: Labels::from_pairs(&[("__name__", "up")]),
            samples: vec![Sample {
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
