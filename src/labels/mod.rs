//! Label sets: the identity of a series, stored compactly and kept sorted by name.
//!
//! A `Labels` value is one heap allocation holding every name and value back to back,
//! each prefixed by its length as a uvarint (the same idea as Prometheus's
//! "stringlabels"). One allocation per series keeps head memory per series small;
//! iteration decodes the buffer on the fly. The buffer is reference-counted, so
//! cloning a label set (which the query engine does for every series it touches)
//! costs a counter increment, not an allocation.

mod matcher;
mod selector;

pub use matcher::{MatchType, Matcher, MatcherError};
pub use selector::{parse_selector, SelectorError};

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Longest label name or value accepted, in bytes. Longer strings are an input error
/// long before they reach storage; this is the storage layer's own last limit.
pub const LABEL_STRING_LEN_MAX: usize = 1 << 20;

/// One label: a name and its value, borrowed from a `Labels` buffer or owned elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A sorted set of labels with unique names. Empty values are never stored: a label
/// with an empty value is the same as an absent label, as in Prometheus.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// `uvarint(len) bytes` for name, value, name, value, … sorted by name; shared
    /// between clones.
    data: Arc<[u8]>,
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Labels {
        Labels::default()
    }

    /// Builds a label set from pairs in any order. Empty values are dropped; when a
    /// name repeats, the last value wins.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Labels {
        let mut b = LabelsBuilder::new();
        for (n, v) in pairs {
            b.set(n.as_ref(), v.as_ref());
        }
        b.build()
    }

    /// Builds from labels that are already sorted by name with unique names and
    /// no empty values. The caller vouches for that; it is checked in debug builds.
    pub fn from_sorted<'a, I: IntoIterator<Item = Label<'a>>>(labels: I) -> Labels {
        let mut data = Vec::new();
        let mut prev: Option<&str> = None;
        for l in labels {
            debug_assert!(prev.is_none_or(|p| p < l.name), "labels not sorted/unique");
            debug_assert!(!l.value.is_empty(), "empty label value");
            push_str(&mut data, l.name);
            push_str(&mut data, l.value);
            prev = Some(l.name);
        }
        Labels {
            data: Arc::from(data),
        }
    }

    /// Iterates labels in name order.
    pub fn iter(&self) -> LabelsIter<'_> {
        LabelsIter { rest: &self.data }
    }

    /// Iterates labels in name order as raw bytes, without checking UTF-8 again:
    /// for building keys and hashes, where the bytes are all that matters.
    pub fn iter_bytes(&self) -> LabelBytesIter<'_> {
        LabelBytesIter { rest: &self.data }
    }

    /// The value of `name`, or "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.iter()
            .find(|l| l.name == name)
            .map(|l| l.value)
            .unwrap_or("")
    }

    /// Whether the set has a label called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.iter().any(|l| l.name == name)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes held on the heap by this label set (shared with its clones): the
    /// buffer and the two reference counts in front of it.
    pub fn heap_bytes(&self) -> usize {
        self.data.len() + 2 * std::mem::size_of::<usize>()
    }

    /// An identity of this label set's shared buffer: equal for clones, different
    /// for label sets built separately (even with equal labels) while both are
    /// alive. Lets callers cache per-series work across evaluation steps.
    pub fn buffer_id(&self) -> usize {
        self.data.as_ptr() as usize
    }

    /// The metric name, or "" when there is none.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// Whether both are clones of one label set (share one buffer): a cheap test
    /// that implies equality, for callers that usually hold the same set.
    pub fn ptr_eq(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// A 64-bit hash of the label set for in-memory maps (xxh3 over the encoded
    /// bytes): many times faster than `stable_hash` on long label sets, but not
    /// promised to stay the same across versions, so never stored or sent.
    pub fn map_hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.data)
    }

    /// A 64-bit hash of the label set that is stable across processes and versions
    /// (FNV-1a over names and values with separators), for sharding.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for l in self.iter() {
            for b in l
                .name
                .bytes()
                .chain([0xff])
                .chain(l.value.bytes())
                .chain([0xff])
            {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// The label set's bytes as stored: `uvarint(len) bytes` for name, value,
    /// name, value, … in name order. `from_encoded` reads them back.
    pub fn encoded(&self) -> &[u8] {
        &self.data
    }

    /// A label set from bytes made by `encoded` (on another node, say), checked:
    /// every length in bounds, UTF-8, names sorted and unique, no empty value.
    pub fn from_encoded(bytes: &[u8]) -> Result<Labels, LabelsDecodeError> {
        let mut rest = bytes;
        let mut prev: Option<&[u8]> = None;
        while !rest.is_empty() {
            let name = checked_field(&mut rest)?;
            let value = checked_field(&mut rest)?;
            if name.is_empty() || value.is_empty() {
                return Err(LabelsDecodeError::Empty);
            }
            std::str::from_utf8(name).map_err(|_| LabelsDecodeError::Utf8)?;
            std::str::from_utf8(value).map_err(|_| LabelsDecodeError::Utf8)?;
            if prev.is_some_and(|p| p >= name) {
                return Err(LabelsDecodeError::Order {
                    name: String::from_utf8_lossy(name).chars().take(64).collect(),
                });
            }
            prev = Some(name);
        }
        Ok(Labels {
            data: Arc::from(bytes),
        })
    }

    /// A builder seeded with these labels, for changing a few of them.
    pub fn builder(&self) -> LabelsBuilder {
        let mut b = LabelsBuilder::new();
        for l in self.iter() {
            b.pairs.push((l.name.to_string(), l.value.to_string()));
        }
        b
    }
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    assert!(s.len() <= LABEL_STRING_LEN_MAX, "label string too long");
    let mut n = s.len() as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// Why bytes from another node are not a label set (`Labels::from_encoded`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsDecodeError {
    #[error("label set ends in the middle of a field")]
    Truncated,
    #[error("label name or value longer than {LABEL_STRING_LEN_MAX} bytes")]
    TooLong,
    #[error("label name or value is not valid UTF-8")]
    Utf8,
    #[error("empty label name or value")]
    Empty,
    #[error("label {name:?} is out of order or repeated")]
    Order { name: String },
}

/// `take_field` for untrusted bytes: every length is checked.
fn checked_field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], LabelsDecodeError> {
    let mut n: u64 = 0;
    let mut i = 0;
    loop {
        let b = *rest.get(i).ok_or(LabelsDecodeError::Truncated)?;
        if i == 9 {
            return Err(LabelsDecodeError::TooLong);
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        i += 1;
        if b < 0x80 {
            break;
        }
    }
    if n > LABEL_STRING_LEN_MAX as u64 {
        return Err(LabelsDecodeError::TooLong);
    }
    let n = n as usize;
    if rest.len() - i < n {
        return Err(LabelsDecodeError::Truncated);
    }
    let (s, tail) = rest[i..].split_at(n);
    *rest = tail;
    Ok(s)
}

/// Iterator over the labels of a `Labels` as `(name, value)` byte slices.
pub struct LabelBytesIter<'a> {
    rest: &'a [u8],
}

impl<'a> LabelBytesIter<'a> {
    fn next_bytes(&mut self) -> &'a [u8] {
        take_field(&mut self.rest)
    }
}

/// Takes one length-prefixed (uvarint) field off the front of a labels buffer.
fn take_field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let mut n: usize = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = rest[i];
        n |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    let (s, tail) = rest[i..].split_at(n);
    *rest = tail;
    s
}

impl<'a> Iterator for LabelBytesIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        if self.rest.is_empty() {
            return None;
        }
        let name = self.next_bytes();
        let value = self.next_bytes();
        Some((name, value))
    }
}

/// Iterator over the labels of a `Labels`.
pub struct LabelsIter<'a> {
    rest: &'a [u8],
}

impl<'a> LabelsIter<'a> {
    fn next_str(&mut self) -> &'a str {
        let s = take_field(&mut self.rest);
        // The buffer is only ever built from `&str`s, so it is valid UTF-8 by construction.
        std::str::from_utf8(s).expect("labels buffer holds valid UTF-8")
    }
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = Label<'a>;
    fn next(&mut self) -> Option<Label<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let name = self.next_str();
        let value = self.next_str();
        Some(Label { name, value })
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = Label<'a>;
    type IntoIter = LabelsIter<'a>;
    fn into_iter(self) -> LabelsIter<'a> {
        self.iter()
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.data.hash(state)
    }
}

impl Ord for Labels {
    /// Prometheus's order: label by label, name then value, a prefix sorts first.
    /// Compared on the encoded fields (name, value, name, value, …): a label is
    /// two fields in that order and strings order by their bytes, so the first
    /// field that differs decides as the labels would, without making strings of
    /// them. Merging peers' answers compares label sets for every series.
    fn cmp(&self, other: &Labels) -> Ordering {
        if Arc::ptr_eq(&self.data, &other.data) {
            return Ordering::Equal;
        }
        let (mut a, mut b) = (&self.data[..], &other.data[..]);
        loop {
            match (a.is_empty(), b.is_empty()) {
                (true, true) => return Ordering::Equal,
                (true, false) => return Ordering::Less,
                (false, true) => return Ordering::Greater,
                (false, false) => {}
            }
            match take_field(&mut a).cmp(take_field(&mut b)) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Labels {
    /// `{a="1", b="2"}` with values escaped like Go's `%q`, as Prometheus prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={}", l.name, quote(l.value))?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Quotes a string like Go's `strconv.Quote` for printable text.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds a `Labels` from pairs in any order.
#[derive(Debug, Default, Clone)]
pub struct LabelsBuilder {
    pairs: Vec<(String, String)>,
}

impl LabelsBuilder {
    pub fn new() -> LabelsBuilder {
        LabelsBuilder::default()
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.pairs.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Removes `name`.
    pub fn del(&mut self, name: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        self
    }

    /// The current value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A snapshot of the current labels sorted by name, so callers can change the
    /// builder while walking them (as relabeling's labelmap/labeldrop do).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut p = self.pairs.clone();
        p.sort();
        p
    }

    pub fn build(&self) -> Labels {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Labels::from_sorted(pairs.iter().map(|(n, v)| Label {
            name: n.as_str(),
            value: v.as_str(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_sorted_and_drops_empty_values() {
        let l = Labels::from_pairs(&[("b", "2"), ("a", "1"), ("c", ""), ("__name__", "up")]);
        let names: Vec<&str> = l.iter().map(|l| l.name).collect();
        assert_eq!(names, ["__name__", "a", "b"]);
        assert_eq!(l.get("a"), "1");
        assert_eq!(l.get("c"), "");
        assert_eq!(l.metric_name(), "up");
        assert_eq!(l.to_string(), r#"{__name__="up", a="1", b="2"}"#);
    }

    #[test]
    fn byte_iteration_matches_string_iteration() {
        let l = Labels::from_pairs(&[("b", "2"), ("a", "é"), ("__name__", "up")]);
        let bytes: Vec<(&[u8], &[u8])> = l.iter_bytes().collect();
        let strs: Vec<(&[u8], &[u8])> = l
            .iter()
            .map(|x| (x.name.as_bytes(), x.value.as_bytes()))
            .collect();
        assert_eq!(bytes, strs);
    }

    #[test]
    fn orders_like_prometheus() {
        let a = Labels::from_pairs(&[("a", "1")]);
        let ab = Labels::from_pairs(&[("a", "1"), ("b", "1")]);
        let a2 = Labels::from_pairs(&[("a", "2")]);
        assert!(a < ab);
        assert!(ab < a2);
        assert!(Labels::empty() < a);
    }

    #[test]
    fn long_strings_round_trip() {
        let v = "x".repeat(300);
        let l = Labels::from_pairs(&[("k", v.as_str())]);
        assert_eq!(l.get("k"), v);
    }

    #[test]
    fn encoded_bytes_come_back_checked() {
        let v = "x".repeat(300);
        let l = Labels::from_pairs(&[("b", "2"), ("a", "é"), ("k", v.as_str())]);
        assert_eq!(Labels::from_encoded(l.encoded()).unwrap(), l);
        assert_eq!(Labels::from_encoded(&[]).unwrap(), Labels::empty());
        let bad: &[(&[u8], LabelsDecodeError)] = &[
            (b"\x01a", LabelsDecodeError::Truncated),
            (b"\x01a\x05ab", LabelsDecodeError::Truncated),
            (b"\x01a\x80", LabelsDecodeError::Truncated),
            (b"\x01a\x00", LabelsDecodeError::Empty),
            (b"\x00\x01a", LabelsDecodeError::Empty),
            (b"\x01\xff\x01a", LabelsDecodeError::Utf8),
            (
                b"\x01b\x011\x01a\x011",
                LabelsDecodeError::Order { name: "a".into() },
            ),
            (
                b"\x01a\x011\x01a\x012",
                LabelsDecodeError::Order { name: "a".into() },
            ),
            (b"\x01a\xff\xff\xff\xff\x0f", LabelsDecodeError::TooLong),
            (
                b"\x01a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                LabelsDecodeError::TooLong,
            ),
        ];
        for (bytes, want) in bad {
            assert_eq!(&Labels::from_encoded(bytes).unwrap_err(), want, "{bytes:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(l) = Labels::from_encoded(&bytes) {
                // Whatever is accepted is a well-formed label set.
                let pairs: Vec<(String, String)> =
                    l.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
                proptest::prop_assert_eq!(Labels::from_pairs(&pairs), l);
            }
        }

        #[test]
        fn label_sets_order_as_their_labels_do(
            a in proptest::collection::btree_map("[ab]{1,3}|[é_]{60,70}", "[ab]{1,2}|.{1,3}|x{130,140}", 0..4),
            b in proptest::collection::btree_map("[ab]{1,3}|[é_]{60,70}", "[ab]{1,2}|.{1,3}|x{130,140}", 0..4),
        ) {
            // Few names and values, so sets share prefixes and labels often; long
            // strings have two-byte lengths.
            let a = Labels::from_pairs(&a.into_iter().collect::<Vec<_>>());
            let b = Labels::from_pairs(&b.into_iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(a.cmp(&b), a.iter().cmp(b.iter()));
            proptest::prop_assert_eq!(b.cmp(&a), b.iter().cmp(a.iter()));
            proptest::prop_assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
        }

        #[test]
        fn label_sets_round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,8}", ".{1,8}", 0..6)) {
            let pairs: Vec<(String, String)> = pairs.into_iter().collect();
            let l = Labels::from_pairs(&pairs);
            proptest::prop_assert_eq!(Labels::from_encoded(l.encoded()).unwrap(), l);
        }
    }
}
