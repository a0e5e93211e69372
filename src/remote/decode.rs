//! A zero-copy decoder of remote-write 1.0 `WriteRequest`s (`proto/remote.proto`).
//!
//! prost's generated types own every label name and value as a `String`: two
//! allocations per label, ~20 per series, for every series of every request, only
//! to be turned into a `Labels` and dropped. This decoder walks the protobuf bytes
//! once, keeps each series' label fields as a borrowed byte range and reads the
//! samples into one flat vector. Label fields are parsed and validated only when
//! the receiver's series cache (`Receiver` in `remote`) does not know those exact
//! bytes yet, so a known series costs one hash lookup.
//!
//! Malformed input (a truncated field, a length past the end, a wrong wire type,
//! a varint of more than ten bytes, invalid UTF-8 in a label) is a `DecodeError`,
//! never a panic. Fields this receiver does not use (metadata, exemplars,
//! histograms, unknown fields) are skipped, as prost skips unknown fields.

use std::ops::Range;

/// Why the bytes are not a `WriteRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: unexpected end of data at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what}: varint longer than ten bytes at byte {offset}")]
    Varint { what: &'static str, offset: usize },
    #[error("{what}: field {field} has wire type {wire_type}, want {want}")]
    WireType {
        what: &'static str,
        field: u64,
        wire_type: u8,
        want: u8,
    },
    #[error("{what}: invalid wire type {wire_type} at byte {offset}")]
    UnknownWireType {
        what: &'static str,
        wire_type: u8,
        offset: usize,
    },
    #[error("{what}: invalid field number 0 at byte {offset}")]
    FieldZero { what: &'static str, offset: usize },
    #[error("label {what} is not valid UTF-8")]
    Utf8 { what: &'static str },
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// One series of a request, borrowed from the request's bytes.
#[derive(Debug, Clone)]
pub struct SeriesView<'a> {
    /// The `TimeSeries` message's bytes, for parsing its labels.
    msg: &'a [u8],
    /// The bytes of all its label fields (tags and lengths included) when they
    /// are adjacent, as every sender writes them: the series cache's key. `None`
    /// when other fields come between labels; such a series is not cached.
    pub labels_key: Option<&'a [u8]>,
    /// Its samples in `RequestView::samples`.
    pub samples: Range<usize>,
}

/// A decoded `WriteRequest`: series in request order, their samples in one vector.
#[derive(Debug, Clone, Default)]
pub struct RequestView<'a> {
    pub series: Vec<SeriesView<'a>>,
    /// (timestamp ms, value) of every series, in order; each series has a range.
    pub samples: Vec<(i64, f64)>,
}

/// A cursor over protobuf bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Which message is being read, for error messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            what: self.what,
            offset: self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(DecodeError::Varint {
            what: self.what,
            offset: self.pos,
        })
    }

    /// A field's key: (field number, wire type).
    fn key(&mut self) -> Result<(u64, u8), DecodeError> {
        let at = self.pos;
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err(DecodeError::FieldZero {
                what: self.what,
                offset: at,
            });
        }
        Ok((field, (k & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(self.truncated());
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.truncated())?;
        self.take(n)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Skips a field this decoder does not use. Groups (wire types 3 and 4,
    /// deprecated and never sent by remote-write senders) are refused.
    fn skip(&mut self, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            _ => Err(DecodeError::UnknownWireType {
                what: self.what,
                wire_type,
                offset: self.pos,
            }),
        }
    }

    fn want(&self, field: u64, wire_type: u8, want: u8) -> Result<(), DecodeError> {
        if wire_type == want {
            Ok(())
        } else {
            Err(DecodeError::WireType {
                what: self.what,
                field,
                wire_type,
                want,
            })
        }
    }
}

/// Decodes a (decompressed) `WriteRequest`. Label fields are only delimited here;
/// `SeriesView::labels` parses them.
pub fn decode(buf: &[u8]) -> Result<RequestView<'_>, DecodeError> {
    let mut out = RequestView::default();
    let mut r = Reader::new(buf, "WriteRequest");
    while !r.done() {
        let (field, wire_type) = r.key()?;
        if field == 1 {
            r.want(field, wire_type, WIRE_LEN)?;
            let msg = r.len_delimited()?;
            let series = decode_series(msg, &mut out.samples)?;
            out.series.push(series);
        } else {
            r.skip(wire_type)?;
        }
    }
    Ok(out)
}

fn decode_series<'a>(
    msg: &'a [u8],
    samples: &mut Vec<(i64, f64)>,
) -> Result<SeriesView<'a>, DecodeError> {
    let first_sample = samples.len();
    let mut r = Reader::new(msg, "TimeSeries");
    // The span of label fields, and whether another field came inside it.
    let mut labels: Option<Range<usize>> = None;
    let mut adjacent = true;
    while !r.done() {
        let start = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                r.want(field, wire_type, WIRE_LEN)?;
                r.len_delimited()?;
                match &mut labels {
                    None => labels = Some(start..r.pos),
                    Some(span) => {
                        adjacent &= span.end == start;
                        span.end = r.pos;
                    }
                }
            }
            2 => {
                r.want(field, wire_type, WIRE_LEN)?;
                samples.push(decode_sample(r.len_delimited()?)?);
            }
            _ => r.skip(wire_type)?,
        }
    }
    let labels_key = match labels {
        Some(span) if adjacent => Some(&msg[span]),
        Some(_) => None,
        None => Some(&msg[..0]),
    };
    Ok(SeriesView {
        msg,
        labels_key,
        samples: first_sample..samples.len(),
    })
}

fn decode_sample(msg: &[u8]) -> Result<(i64, f64), DecodeError> {
    let (mut t, mut v) = (0i64, 0f64);
    let mut r = Reader::new(msg, "Sample");
    while !r.done() {
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                r.want(field, wire_type, WIRE_FIXED64)?;
                v = f64::from_bits(r.fixed64()?);
            }
            2 => {
                r.want(field, wire_type, WIRE_VARINT)?;
                // int64 is sent as the two's complement in ten varint bytes.
                t = r.varint()? as i64;
            }
            _ => r.skip(wire_type)?,
        }
    }
    Ok((t, v))
}

impl<'a> SeriesView<'a> {
    /// Parses this series' labels into `out` as (name, value) pairs in request
    /// order, checking UTF-8; a repeated field inside one `Label` takes the last
    /// value, as protobuf decoders do.
    pub fn labels(&self, out: &mut Vec<(&'a str, &'a str)>) -> Result<(), DecodeError> {
        out.clear();
        let mut r = Reader::new(self.msg, "TimeSeries");
        while !r.done() {
            let (field, wire_type) = r.key()?;
            if field != 1 {
                r.skip(wire_type)?;
                continue;
            }
            let label = r.len_delimited()?;
            let (mut name, mut value): (&[u8], &[u8]) = (b"", b"");
            let mut lr = Reader::new(label, "Label");
            while !lr.done() {
                let (field, wire_type) = lr.key()?;
                match field {
                    1 | 2 => {
                        lr.want(field, wire_type, WIRE_LEN)?;
                        let s = lr.len_delimited()?;
                        if field == 1 {
                            name = s;
                        } else {
                            value = s;
                        }
                    }
                    _ => lr.skip(wire_type)?,
                }
            }
            let name = std::str::from_utf8(name).map_err(|_| DecodeError::Utf8 { what: "name" })?;
            let value =
                std::str::from_utf8(value).map_err(|_| DecodeError::Utf8 { what: "value" })?;
            out.push((name, value));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::prompb;
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn arb_request() -> impl Strategy<Value = prompb::WriteRequest> {
        let label = ("[a-z_]{0,6}", "[a-zA-Z0-9 é]{0,6}")
            .prop_map(|(name, value)| prompb::Label { name, value });
        let sample = (any::<i64>(), any::<u64>()).prop_map(|(timestamp, v)| prompb::Sample {
            value: f64::from_bits(v),
            timestamp,
        });
        let series = (
            proptest::collection::vec(label, 0..5),
            proptest::collection::vec(sample, 0..5),
        )
            .prop_map(|(labels, samples)| prompb::TimeSeries { labels, samples });
        proptest::collection::vec(series, 0..5).prop_map(|timeseries| prompb::WriteRequest {
            timeseries,
            metadata: vec![prompb::MetricMetadata {
                r#type: 1,
                metric_family_name: "m".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        })
    }

    /// What the view holds, in prost's types, to compare with prost's decoding.
    fn to_prost(v: &RequestView<'_>) -> Vec<prompb::TimeSeries> {
        v.series
            .iter()
            .map(|s| {
                let mut pairs = Vec::new();
                s.labels(&mut pairs).unwrap();
                prompb::TimeSeries {
                    labels: pairs
                        .into_iter()
                        .map(|(n, v)| prompb::Label {
                            name: n.into(),
                            value: v.into(),
                        })
                        .collect(),
                    samples: v.samples[s.samples.clone()]
                        .iter()
                        .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                        .collect(),
                }
            })
            .collect()
    }

    /// Each series' label pairs and (timestamp, value bits).
    type Bits = Vec<(Vec<(String, String)>, Vec<(i64, u64)>)>;

    fn bits(ts: &[prompb::TimeSeries]) -> Bits {
        ts.iter()
            .map(|s| {
                (
                    s.labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    s.samples
                        .iter()
                        .map(|x| (x.timestamp, x.value.to_bits()))
                        .collect(),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn agrees_with_prost(req in arb_request()) {
            let bytes = req.encode_to_vec();
            let view = decode(&bytes).unwrap();
            prop_assert_eq!(bits(&to_prost(&view)), bits(&req.timeseries));
            for s in &view.series {
                prop_assert!(s.labels_key.is_some());
            }
        }

        #[test]
        fn garbage_is_an_error_or_agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            // Whatever the bytes, no panic; when both decoders accept them, they agree.
            let ours = decode(&bytes).and_then(|v| {
                for s in &v.series {
                    s.labels(&mut Vec::new())?;
                }
                Ok(to_prost(&v))
            });
            if let (Ok(ours), Ok(theirs)) = (ours, prompb::WriteRequest::decode(bytes.as_slice())) {
                prop_assert_eq!(bits(&ours), bits(&theirs.timeseries));
            }
        }

        #[test]
        fn truncation_is_an_error(req in arb_request(), cut in 1usize..64) {
            let bytes = req.encode_to_vec();
            prop_assume!(!bytes.is_empty());
            let cut = cut.min(bytes.len());
            let short = &bytes[..bytes.len() - cut];
            // A cut at a field boundary is a valid, shorter request; anything else
            // must fail, and prost must agree on which.
            let ours = decode(short).and_then(|v| {
                for s in &v.series {
                    s.labels(&mut Vec::new())?;
                }
                Ok(())
            });
            prop_assert_eq!(ours.is_ok(), prompb::WriteRequest::decode(short).is_ok());
        }
    }

    #[test]
    fn labels_split_by_a_sample_are_decoded_but_not_cached() {
        // TimeSeries { label a=1, sample, label __name__=m }, hand-encoded.
        let label = |n: &str, v: &str| {
            prompb::Label {
                name: n.into(),
                value: v.into(),
            }
            .encode_to_vec()
        };
        let mut ts = Vec::new();
        for (tag, body) in [
            (0x0a, label("a", "1")),
            (
                0x12,
                prompb::Sample {
                    value: 1.0,
                    timestamp: 5,
                }
                .encode_to_vec(),
            ),
            (0x0a, label("__name__", "m")),
        ] {
            ts.push(tag);
            ts.push(body.len() as u8);
            ts.extend(body);
        }
        let mut req = vec![0x0a, ts.len() as u8];
        req.extend(ts);
        let view = decode(&req).unwrap();
        assert_eq!(view.series.len(), 1);
        assert!(view.series[0].labels_key.is_none());
        let mut pairs = Vec::new();
        view.series[0].labels(&mut pairs).unwrap();
        assert_eq!(pairs, vec![("a", "1"), ("__name__", "m")]);
        assert_eq!(view.samples, vec![(5, 1.0)]);
    }

    #[test]
    fn bad_utf8_in_a_label_is_an_error() {
        let req = prompb::WriteRequest {
            timeseries: vec![prompb::TimeSeries {
                labels: vec![prompb::Label {
                    name: "__name__".into(),
                    value: "ab".into(),
                }],
                samples: vec![],
            }],
            metadata: vec![],
        };
        let mut bytes = req.encode_to_vec();
        let at = bytes.len() - 2;
        bytes[at] = 0xff;
        let view = decode(&bytes).unwrap();
        let e = view.series[0].labels(&mut Vec::new()).unwrap_err();
        assert_eq!(e, DecodeError::Utf8 { what: "value" });
        assert!(prompb::WriteRequest::decode(bytes.as_slice()).is_err());
    }

    #[test]
    fn a_wrong_wire_type_is_an_error() {
        // WriteRequest field 1 as a varint.
        let e = decode(&[0x08, 0x01]).unwrap_err();
        assert!(matches!(e, DecodeError::WireType { field: 1, .. }), "{e}");
        // A group (wire type 3).
        assert!(decode(&[0x1b]).is_err());
        // Field number 0.
        assert!(matches!(
            decode(&[0x02, 0x00]),
            Err(DecodeError::FieldZero { .. })
        ));
        // An eleven-byte varint.
        assert!(matches!(
            decode(&[0xff; 11]),
            Err(DecodeError::Varint { .. })
        ));
        // A length past the end.
        assert!(matches!(
            decode(&[0x0a, 0x05, 0x00]),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
