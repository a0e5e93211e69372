//! WAL record encoding: series, samples and tombstones (Prometheus's record format).
//!
//! Each record is one type byte and a body, exactly as Prometheus's
//! `tsdb/record` writes them, so the head's WAL payloads match Prometheus's:
//!
//! * series (1): per series, an 8-byte big-endian ref, then a uvarint label count
//!   and that many uvarint-length-prefixed name and value strings;
//! * samples (2): nothing more when empty; otherwise the first sample's ref and
//!   timestamp as 8-byte big-endian base values, then per sample (the first
//!   included) a signed varint ref delta and timestamp delta from the bases and the
//!   value's 8 IEEE-754 bytes, big-endian;
//! * tombstones (3): per deleted interval, an 8-byte big-endian ref, then the
//!   interval's min and max time as signed varints.
//!
//! A record whose type byte has the high bit set ([`SNAPPY_FLAG`]) holds the record
//! of type `byte & 0x7f` with its body compressed as one raw snappy block (the head
//! writes its records so when that makes them shorter, as Prometheus's WAL
//! compression does); [`decode`] reads both forms.
//!
//! Encoders append to a caller's buffer, so the append path can reuse one buffer
//! and allocates nothing per sample. Decoders never panic on bad input.

use crate::encoding::{put_be_u64, put_uvarint, put_uvarint_str, put_varint, DecodeError, Decoder};
use crate::labels::{Label, Labels, LABEL_STRING_LEN_MAX};

/// Type byte of a series record.
pub const RECORD_SERIES: u8 = 1;
/// Type byte of a float samples record.
pub const RECORD_SAMPLES: u8 = 2;
/// Type byte of a tombstones record.
pub const RECORD_TOMBSTONES: u8 = 3;

/// Set in the type byte of a record whose body is snappy-compressed.
pub const SNAPPY_FLAG: u8 = 0x80;

/// Largest body a compressed record may expand to (a bound for bad input).
const DECOMPRESSED_MAX: usize = 1 << 30;

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Series(Vec<RefSeries>),
    Samples(Vec<RefSample>),
    Tombstones(Vec<RefTombstone>),
}

/// A new series and the head ref it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSeries {
    pub series_ref: u64,
    pub labels: Labels,
}

/// One float sample of the series `series_ref`.
#[derive(Debug, Clone, Copy)]
pub struct RefSample {
    pub series_ref: u64,
    pub t: i64,
    pub v: f64,
}

impl PartialEq for RefSample {
    /// Bitwise on the value, so NaNs (the stale marker included) compare as stored.
    fn eq(&self, other: &RefSample) -> bool {
        self.series_ref == other.series_ref
            && self.t == other.t
            && self.v.to_bits() == other.v.to_bits()
    }
}

/// A deleted interval `[mint, maxt]` (both inclusive) of series `series_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefTombstone {
    pub series_ref: u64,
    pub mint: i64,
    pub maxt: i64,
}

/// Why a record could not be decoded. Offsets count from the record's type byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty WAL record")]
    Empty,
    #[error("unknown WAL record type {0}")]
    UnknownType(u8),
    #[error("snappy-compressed record of type {kind}: {reason}")]
    Snappy { kind: u8, reason: String },
    #[error("{kind} record: {what} at byte {offset}")]
    Invalid {
        kind: &'static str,
        what: &'static str,
        offset: usize,
    },
}

impl RecordError {
    fn decode(kind: &'static str, e: DecodeError) -> RecordError {
        // The decoder runs over the body; report offsets in the whole record.
        RecordError::Invalid {
            kind,
            what: e.what,
            offset: e.offset + 1,
        }
    }
}

/// The type byte of a record, if it has one.
pub fn record_type(buf: &[u8]) -> Option<u8> {
    buf.first().copied()
}

/// Appends a series record to `buf`.
pub fn encode_series(series: &[RefSeries], buf: &mut Vec<u8>) {
    buf.push(RECORD_SERIES);
    for s in series {
        put_be_u64(buf, s.series_ref);
        put_uvarint(buf, s.labels.len() as u64);
        for l in s.labels.iter() {
            put_uvarint_str(buf, l.name);
            put_uvarint_str(buf, l.value);
        }
    }
}

/// Appends a samples record to `buf`.
pub fn encode_samples(samples: &[RefSample], buf: &mut Vec<u8>) {
    // Typical deltas take 1–3 bytes each; reserving once avoids regrowth mid-record.
    buf.reserve(1 + 16 + samples.len() * 12);
    buf.push(RECORD_SAMPLES);
    let Some(first) = samples.first() else {
        return;
    };
    put_be_u64(buf, first.series_ref);
    put_be_u64(buf, first.t as u64);
    for s in samples {
        // Refs are unsigned but their deltas are written signed, as Prometheus
        // does; wrapping arithmetic makes every pair of refs round-trip.
        put_varint(
            buf,
            (s.series_ref as i64).wrapping_sub(first.series_ref as i64),
        );
        put_varint(buf, s.t.wrapping_sub(first.t));
        put_be_u64(buf, s.v.to_bits());
    }
}

/// Appends a tombstones record to `buf`.
pub fn encode_tombstones(tombstones: &[RefTombstone], buf: &mut Vec<u8>) {
    buf.push(RECORD_TOMBSTONES);
    for t in tombstones {
        put_be_u64(buf, t.series_ref);
        put_varint(buf, t.mint);
        put_varint(buf, t.maxt);
    }
}

/// Copies `record` (as the encoders write it) to `out`, with its body
/// snappy-compressed and [`SNAPPY_FLAG`] set when that makes it shorter. `scratch`
/// is reused between calls.
pub fn compress_into(
    record: &[u8],
    encoder: &mut snap::raw::Encoder,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let Some((&kind, body)) = record.split_first() else {
        return;
    };
    scratch.resize(snap::raw::max_compress_len(body.len()), 0);
    match encoder.compress(body, scratch) {
        Ok(n) if n + 1 < record.len() && kind & SNAPPY_FLAG == 0 => {
            out.push(kind | SNAPPY_FLAG);
            out.extend_from_slice(&scratch[..n]);
        }
        _ => out.extend_from_slice(record),
    }
}

/// `buf` as the encoders wrote it: decompressed if it is a compressed record.
fn decompressed(buf: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, RecordError> {
    let Some((&kind, body)) = buf.split_first() else {
        return Err(RecordError::Empty);
    };
    if kind & SNAPPY_FLAG == 0 {
        return Ok(std::borrow::Cow::Borrowed(buf));
    }
    let kind = kind & !SNAPPY_FLAG;
    let fail = |reason: String| RecordError::Snappy { kind, reason };
    let len = snap::raw::decompress_len(body).map_err(|e| fail(e.to_string()))?;
    if len > DECOMPRESSED_MAX {
        return Err(fail(format!(
            "claims {len} bytes, more than {DECOMPRESSED_MAX}"
        )));
    }
    let mut out = vec![0u8; len + 1];
    out[0] = kind;
    snap::raw::Decoder::new()
        .decompress(body, &mut out[1..])
        .map_err(|e| fail(e.to_string()))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// Decodes any record, compressed or not.
pub fn decode(buf: &[u8]) -> Result<Record, RecordError> {
    let buf = &*decompressed(buf)?;
    match record_type(buf) {
        None => Err(RecordError::Empty),
        Some(RECORD_SERIES) => {
            let mut out = Vec::new();
            decode_series_into(buf, &mut out)?;
            Ok(Record::Series(out))
        }
        Some(RECORD_SAMPLES) => {
            let mut out = Vec::new();
            decode_samples_into(buf, &mut out)?;
            Ok(Record::Samples(out))
        }
        Some(RECORD_TOMBSTONES) => {
            let mut out = Vec::new();
            decode_tombstones_into(buf, &mut out)?;
            Ok(Record::Tombstones(out))
        }
        Some(t) => Err(RecordError::UnknownType(t)),
    }
}

/// Checks the type byte and returns a decoder over the body.
fn body(buf: &[u8], want: u8) -> Result<Decoder<'_>, RecordError> {
    match record_type(buf) {
        None => Err(RecordError::Empty),
        Some(t) if t == want => Ok(Decoder::new(&buf[1..])),
        Some(t) => Err(RecordError::UnknownType(t)),
    }
}

/// Decodes a series record, appending to `out` (which WAL replay can reuse).
pub fn decode_series_into(buf: &[u8], out: &mut Vec<RefSeries>) -> Result<(), RecordError> {
    const KIND: &str = "series";
    let mut d = body(buf, RECORD_SERIES)?;
    let err = |d: &Decoder, what| RecordError::Invalid {
        kind: KIND,
        what,
        offset: d.position() + 1,
    };
    // Reused across series so decoding allocates only the `Labels` themselves.
    let mut scratch: Vec<Label<'_>> = Vec::new();
    while !d.is_empty() {
        let series_ref = d.be_u64().map_err(|e| RecordError::decode(KIND, e))?;
        let count = d.uvarint().map_err(|e| RecordError::decode(KIND, e))?;
        scratch.clear();
        for _ in 0..count {
            let name = d.uvarint_str().map_err(|e| RecordError::decode(KIND, e))?;
            let value = d.uvarint_str().map_err(|e| RecordError::decode(KIND, e))?;
            if name.len() > LABEL_STRING_LEN_MAX || value.len() > LABEL_STRING_LEN_MAX {
                return Err(err(&d, "label string over length limit"));
            }
            if scratch.last().is_some_and(|p| p.name >= name) {
                return Err(err(&d, "labels not sorted by name or name repeated"));
            }
            // An empty value is the same as an absent label; `Labels` never stores one.
            if !value.is_empty() {
                scratch.push(Label { name, value });
            }
        }
        out.push(RefSeries {
            series_ref,
            labels: Labels::from_sorted(scratch.iter().copied()),
        });
    }
    Ok(())
}

/// Decodes a samples record, appending to `out`.
pub fn decode_samples_into(buf: &[u8], out: &mut Vec<RefSample>) -> Result<(), RecordError> {
    const KIND: &str = "samples";
    let mut d = body(buf, RECORD_SAMPLES)?;
    if d.is_empty() {
        return Ok(());
    }
    let e = |e| RecordError::decode(KIND, e);
    let base_ref = d.be_u64().map_err(e)?;
    let base_t = d.be_u64().map_err(e)? as i64;
    // Every sample takes at least 10 bytes, which bounds the reservation by the input.
    out.reserve(d.remaining() / 10);
    while !d.is_empty() {
        let dref = d.varint().map_err(e)?;
        let dt = d.varint().map_err(e)?;
        let v = d.be_u64().map_err(e)?;
        out.push(RefSample {
            series_ref: (base_ref as i64).wrapping_add(dref) as u64,
            t: base_t.wrapping_add(dt),
            v: f64::from_bits(v),
        });
    }
    Ok(())
}

/// Decodes a tombstones record, appending to `out`.
pub fn decode_tombstones_into(buf: &[u8], out: &mut Vec<RefTombstone>) -> Result<(), RecordError> {
    const KIND: &str = "tombstones";
    let mut d = body(buf, RECORD_TOMBSTONES)?;
    let e = |e| RecordError::decode(KIND, e);
    while !d.is_empty() {
        let series_ref = d.be_u64().map_err(e)?;
        let mint = d.varint().map_err(e)?;
        let maxt = d.varint().map_err(e)?;
        out.push(RefTombstone {
            series_ref,
            mint,
            maxt,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::STALE_NAN_BITS;
    use proptest::prelude::*;

    #[test]
    fn samples_match_prometheus_bytes() {
        let samples = [
            RefSample {
                series_ref: 1,
                t: 1000,
                v: 1.0,
            },
            RefSample {
                series_ref: 3,
                t: 1010,
                v: f64::from_bits(STALE_NAN_BITS),
            },
        ];
        let mut buf = Vec::new();
        encode_samples(&samples, &mut buf);
        let mut want = vec![2u8];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&1000u64.to_be_bytes());
        want.extend_from_slice(&[0, 0]);
        want.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        want.extend_from_slice(&[4, 20]); // zig-zag 2 and 10
        want.extend_from_slice(&STALE_NAN_BITS.to_be_bytes());
        assert_eq!(buf, want);
        let Ok(Record::Samples(got)) = decode(&buf) else {
            panic!("bad decode")
        };
        assert_eq!(got, samples);
        assert_eq!(got[1].v.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn series_and_tombstones_match_prometheus_bytes() {
        let mut buf = Vec::new();
        encode_series(
            &[RefSeries {
                series_ref: 5,
                labels: Labels::from_pairs(&[("b", "22"), ("a", "1")]),
            }],
            &mut buf,
        );
        let mut want = vec![1u8];
        want.extend_from_slice(&5u64.to_be_bytes());
        want.extend_from_slice(&[2, 1, b'a', 1, b'1', 1, b'b', 2, b'2', b'2']);
        assert_eq!(buf, want);

        buf.clear();
        encode_tombstones(
            &[RefTombstone {
                series_ref: 9,
                mint: -1,
                maxt: 64,
            }],
            &mut buf,
        );
        let mut want = vec![3u8];
        want.extend_from_slice(&9u64.to_be_bytes());
        want.extend_from_slice(&[1, 0x80, 0x01]);
        assert_eq!(buf, want);
    }

    #[test]
    fn empty_records_and_errors() {
        let mut buf = Vec::new();
        encode_samples(&[], &mut buf);
        assert_eq!(buf, [2]);
        assert_eq!(decode(&buf), Ok(Record::Samples(vec![])));
        assert_eq!(decode(&[]), Err(RecordError::Empty));
        assert_eq!(decode(&[4]), Err(RecordError::UnknownType(4)));
        // Invalid UTF-8 in a label value.
        let mut bad = vec![1u8];
        bad.extend_from_slice(&0u64.to_be_bytes());
        bad.extend_from_slice(&[1, 1, b'a', 1, 0xff]);
        assert!(matches!(
            decode(&bad),
            Err(RecordError::Invalid { kind: "series", .. })
        ));
        // Labels out of order.
        let mut bad = vec![1u8];
        bad.extend_from_slice(&0u64.to_be_bytes());
        bad.extend_from_slice(&[2, 1, b'b', 1, b'1', 1, b'a', 1, b'1']);
        assert!(decode(&bad).is_err());
        // A truncated sample.
        let mut buf = Vec::new();
        encode_samples(
            &[RefSample {
                series_ref: 1,
                t: 2,
                v: 3.0,
            }],
            &mut buf,
        );
        buf.pop();
        assert!(decode(&buf).is_err());
    }

    #[test]
    fn compressed_records_decode_like_plain_ones() {
        let series: Vec<RefSeries> = (0..50u64)
            .map(|i| RefSeries {
                series_ref: i + 1,
                labels: Labels::from_pairs(&[
                    ("__name__", "http_requests_total"),
                    ("instance", "node-1.example.org:9100"),
                    ("code", &format!("{}", 200 + i)),
                ]),
            })
            .collect();
        let mut plain = Vec::new();
        encode_series(&series, &mut plain);
        let (mut enc, mut scratch, mut packed) =
            (snap::raw::Encoder::new(), Vec::new(), Vec::new());
        compress_into(&plain, &mut enc, &mut scratch, &mut packed);
        assert_eq!(packed[0], RECORD_SERIES | SNAPPY_FLAG);
        assert!(
            packed.len() * 3 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(decode(&packed), Ok(Record::Series(series)));

        // A record that does not shrink stays as it was.
        let mut tiny = Vec::new();
        encode_tombstones(
            &[RefTombstone {
                series_ref: 1,
                mint: 2,
                maxt: 3,
            }],
            &mut tiny,
        );
        compress_into(&tiny, &mut enc, &mut scratch, &mut packed);
        assert_eq!(packed, tiny);

        // A corrupt compressed body is an error, not a panic.
        let bad = [
            RECORD_SAMPLES | SNAPPY_FLAG,
            0xff,
            0xff,
            0xff,
            0xff,
            0x0f,
            1,
            2,
        ];
        assert!(matches!(
            decode(&bad),
            Err(RecordError::Snappy { kind: 2, .. })
        ));
    }

    fn labels() -> impl Strategy<Value = Labels> {
        proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", ".{0,12}"), 0..6)
            .prop_map(|pairs| Labels::from_pairs(&pairs))
    }

    proptest! {
        #[test]
        fn series_round_trip(series in proptest::collection::vec((any::<u64>(), labels()), 0..20)) {
            let series: Vec<RefSeries> = series
                .into_iter()
                .map(|(series_ref, labels)| RefSeries { series_ref, labels })
                .collect();
            let mut buf = vec![0xaa]; // encoders append; earlier bytes are kept
            encode_series(&series, &mut buf);
            prop_assert_eq!(decode(&buf[1..]), Ok(Record::Series(series)));
        }

        #[test]
        fn samples_round_trip(
            samples in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<u64>()), 0..100)
        ) {
            let samples: Vec<RefSample> = samples
                .into_iter()
                .map(|(series_ref, t, bits)| RefSample { series_ref, t, v: f64::from_bits(bits) })
                .collect();
            let mut buf = Vec::new();
            encode_samples(&samples, &mut buf);
            prop_assert_eq!(decode(&buf), Ok(Record::Samples(samples.clone())));
            let mut packed = Vec::new();
            compress_into(&buf, &mut snap::raw::Encoder::new(), &mut Vec::new(), &mut packed);
            prop_assert_eq!(decode(&packed), Ok(Record::Samples(samples)));
        }

        #[test]
        fn tombstones_round_trip(
            ts in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<i64>()), 0..50)
        ) {
            let ts: Vec<RefTombstone> = ts
                .into_iter()
                .map(|(series_ref, mint, maxt)| RefTombstone { series_ref, mint, maxt })
                .collect();
            let mut buf = Vec::new();
            encode_tombstones(&ts, &mut buf);
            prop_assert_eq!(decode(&buf), Ok(Record::Tombstones(ts)));
        }

        #[test]
        fn garbage_never_panics(
            ty in prop_oneof![0u8..6, 0x80u8..0x86],
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut buf = vec![ty];
            buf.extend_from_slice(&body);
            let _ = decode(&buf);
            let _ = decode(&body);
        }
    }
}
