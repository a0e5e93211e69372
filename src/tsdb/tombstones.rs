//! Tombstones: deleted time ranges per series, and the block `tombstones` file.
//!
//! File layout (Prometheus's `tsdb/docs/format/tombstones.md`, as the Go code
//! actually writes it):
//!
//! ```text
//! magic 0x0130BA30 <4b> | version 1 <1b> | entries | crc <4b>
//! entry: uvarint series ref | varint mint | varint maxt   (one per interval)
//! ```
//!
//! The CRC-32C covers the entries but not the magic or the version byte.

use crate::encoding::{put_be_u32, put_uvarint, put_varint, Decoder};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The four bytes a tombstones file starts with.
pub const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;
/// The only tombstones format version.
pub const FORMAT_V1: u8 = 1;
/// File name inside a block directory.
pub const TOMBSTONES_FILENAME: &str = "tombstones";
/// Largest tombstones file we read. Each interval takes at most 30 bytes, so this
/// is millions of intervals; a bigger file is damage or not ours.
pub const TOMBSTONES_FILE_MAX_BYTES: u64 = 256 << 20;

const HEADER_LEN_BYTES: usize = 5;
const CRC_LEN_BYTES: usize = 4;

/// A deleted time range; both ends are included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub mint: i64,
    pub maxt: i64,
}

impl Interval {
    pub fn new(mint: i64, maxt: i64) -> Interval {
        Interval { mint, maxt }
    }

    /// Whether `t` lies in the interval.
    pub fn contains(&self, t: i64) -> bool {
        self.mint <= t && t <= self.maxt
    }

    /// Whether the interval lies entirely within one of `ivs`.
    pub fn is_subrange(&self, ivs: &Intervals) -> bool {
        ivs.iter()
            .any(|r| r.contains(self.mint) && r.contains(self.maxt))
    }
}

/// Sorted intervals with gaps between them: `add` merges overlapping and adjacent
/// ones (timestamps are whole milliseconds, so [1,2] and [3,4] are [1,4]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<Interval>);

impl Intervals {
    pub fn new() -> Intervals {
        Intervals::default()
    }

    /// Adds an interval, merging it with every interval it overlaps or touches.
    /// An interval with `maxt < mint` is empty and ignored.
    pub fn add(&mut self, n: Interval) {
        if n.maxt < n.mint {
            return;
        }
        // First interval that ends at or after n.mint - 1, i.e. could merge with n.
        let lo = self
            .0
            .partition_point(|iv| iv.maxt < n.mint.saturating_sub(1));
        // First interval that starts after n.maxt + 1, i.e. cannot merge with n.
        let hi = self
            .0
            .partition_point(|iv| iv.mint <= n.maxt.saturating_add(1));
        if lo >= hi {
            self.0.insert(lo, n);
            return;
        }
        let merged = Interval {
            mint: n.mint.min(self.0[lo].mint),
            maxt: n.maxt.max(self.0[hi - 1].maxt),
        };
        self.0.splice(lo..hi, [merged]);
    }

    /// Whether `t` is in one of the intervals.
    pub fn contains(&self, t: i64) -> bool {
        let i = self.0.partition_point(|iv| iv.maxt < t);
        self.0.get(i).is_some_and(|iv| iv.contains(t))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Interval> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[Interval] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Intervals {
    type Item = &'a Interval;
    type IntoIter = std::slice::Iter<'a, Interval>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A tombstones file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TombstoneError {
    #[error("tombstones {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("tombstones {}: corrupt at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// Deleted intervals by series reference. Iteration is in reference order, so the
/// same tombstones always encode to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TombstoneStore {
    by_series: BTreeMap<u64, Intervals>,
}

impl TombstoneStore {
    pub fn new() -> TombstoneStore {
        TombstoneStore::default()
    }

    /// Marks `iv` deleted for series `series_ref`, merging with what is there.
    pub fn add(&mut self, series_ref: u64, iv: Interval) {
        if iv.maxt < iv.mint {
            return;
        }
        self.by_series.entry(series_ref).or_default().add(iv);
    }

    /// The deleted intervals of a series, if any.
    pub fn get(&self, series_ref: u64) -> Option<&Intervals> {
        self.by_series.get(&series_ref)
    }

    /// Whether sample time `t` of series `series_ref` is deleted.
    pub fn is_deleted(&self, series_ref: u64, t: i64) -> bool {
        self.get(series_ref).is_some_and(|ivs| ivs.contains(t))
    }

    /// Series and their intervals, in reference order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Intervals)> + '_ {
        self.by_series.iter().map(|(r, ivs)| (*r, ivs))
    }

    pub fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    /// Number of series with tombstones.
    pub fn series_count(&self) -> usize {
        self.by_series.len()
    }

    /// Number of intervals across all series (Prometheus's `numTombstones`).
    pub fn total(&self) -> u64 {
        self.by_series.values().map(|ivs| ivs.len() as u64).sum()
    }

    /// Forgets the tombstones of a series (e.g. once the series is gone).
    pub fn remove(&mut self, series_ref: u64) {
        self.by_series.remove(&series_ref);
    }

    /// Drops intervals that end before `t`, and series left with none.
    pub fn truncate_before(&mut self, t: i64) {
        self.by_series.retain(|_, ivs| {
            ivs.0.retain(|iv| iv.maxt >= t);
            !ivs.is_empty()
        });
    }

    /// The version byte and entries, without magic or CRC, as in Go's `Encode`.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![FORMAT_V1];
        for (r, ivs) in self.iter() {
            for iv in ivs {
                put_uvarint(&mut buf, r);
                put_varint(&mut buf, iv.mint);
                put_varint(&mut buf, iv.maxt);
            }
        }
        buf
    }

    /// Decodes what `encode` produces. `base` is added to error offsets.
    fn decode(b: &[u8], path: &Path, base: u64) -> Result<TombstoneStore, TombstoneError> {
        let corrupt = |offset: u64, what: String| TombstoneError::Corrupt {
            path: path.to_path_buf(),
            offset,
            what,
        };
        let mut d = Decoder::new(b);
        let version = d
            .u8()
            .map_err(|e| corrupt(base + e.offset as u64, e.what.to_string()))?;
        if version != FORMAT_V1 {
            return Err(corrupt(
                base,
                format!("unsupported tombstones format {version}"),
            ));
        }
        let mut store = TombstoneStore::new();
        while !d.is_empty() {
            let mut entry = || -> Result<(u64, Interval), crate::encoding::DecodeError> {
                let r = d.uvarint()?;
                let mint = d.varint()?;
                let maxt = d.varint()?;
                Ok((r, Interval { mint, maxt }))
            };
            let (r, iv) =
                entry().map_err(|e| corrupt(base + e.offset as u64, e.what.to_string()))?;
            store.add(r, iv);
        }
        Ok(store)
    }
}

/// Reads `dir/tombstones`. A missing file means no tombstones. Returns the store and
/// the file's size in bytes (0 when missing).
pub fn read(dir: &Path) -> Result<(TombstoneStore, u64), TombstoneError> {
    let path = dir.join(TOMBSTONES_FILENAME);
    let io = |op, source| TombstoneError::Io {
        path: path.clone(),
        op,
        source,
    };
    let b = match File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((TombstoneStore::new(), 0))
        }
        Err(e) => return Err(io("open", e)),
        Ok(f) => {
            let len = f.metadata().map_err(|e| io("stat", e))?.len();
            if len > TOMBSTONES_FILE_MAX_BYTES {
                return Err(TombstoneError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    what: format!(
                        "file is {len} bytes, over the {TOMBSTONES_FILE_MAX_BYTES} byte limit"
                    ),
                });
            }
            std::fs::read(&path).map_err(|e| io("read", e))?
        }
    };
    let corrupt = |offset: u64, what: String| TombstoneError::Corrupt {
        path: path.clone(),
        offset,
        what,
    };
    if b.len() < HEADER_LEN_BYTES + CRC_LEN_BYTES {
        return Err(corrupt(
            0,
            format!("file is {} bytes, too small for header and CRC", b.len()),
        ));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != MAGIC_TOMBSTONES {
        return Err(corrupt(
            0,
            format!("bad magic number {magic:#010x}, want {MAGIC_TOMBSTONES:#010x}"),
        ));
    }
    let crc_at = b.len() - CRC_LEN_BYTES;
    let want = u32::from_be_bytes([b[crc_at], b[crc_at + 1], b[crc_at + 2], b[crc_at + 3]]);
    if crc32c::crc32c(&b[HEADER_LEN_BYTES..crc_at]) != want {
        return Err(corrupt(crc_at as u64, "checksum mismatch".to_string()));
    }
    let store = TombstoneStore::decode(&b[4..crc_at], &path, 4)?;
    Ok((store, b.len() as u64))
}

/// Writes `dir/tombstones` atomically: a temporary file is written and fsynced, then
/// renamed over the old one, and the directory is fsynced. Returns the file size.
pub fn write(dir: &Path, store: &TombstoneStore) -> Result<u64, TombstoneError> {
    let path = dir.join(TOMBSTONES_FILENAME);
    let tmp = dir.join(format!("{TOMBSTONES_FILENAME}.tmp"));
    let mut buf = Vec::new();
    put_be_u32(&mut buf, MAGIC_TOMBSTONES);
    let body = store.encode();
    buf.extend_from_slice(&body);
    // The version byte is outside the checksum, as in Prometheus.
    put_be_u32(&mut buf, crc32c::crc32c(&body[1..]));
    write_atomically(&path, &tmp, &buf).map_err(|(op, source)| TombstoneError::Io {
        path,
        op,
        source,
    })?;
    Ok(buf.len() as u64)
}

/// Writes `bytes` to `tmp`, fsyncs, renames it to `path` and fsyncs the directory.
/// On failure the temporary file is removed and the old file is left alone.
pub(crate) fn write_atomically(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
) -> Result<(), (&'static str, std::io::Error)> {
    let res = (|| {
        let mut f = File::create(tmp).map_err(|e| ("create temporary file", e))?;
        f.write_all(bytes).map_err(|e| ("write", e))?;
        f.sync_all().map_err(|e| ("fsync", e))?;
        drop(f);
        std::fs::rename(tmp, path).map_err(|e| ("rename", e))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ("fsync directory", e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn interval() -> impl Strategy<Value = Interval> {
        prop_oneof![
            (-50i64..50, 0i64..10).prop_map(|(a, l)| Interval::new(a, a + l)),
            Just(Interval::new(i64::MIN, -40)),
            Just(Interval::new(40, i64::MAX)),
        ]
    }

    /// The set of covered points within [-60, 60], plus whether the extremes are covered.
    fn covered(ivs: &[Interval]) -> (BTreeSet<i64>, bool, bool) {
        let pts = (-60..=60)
            .filter(|&t| ivs.iter().any(|iv| iv.contains(t)))
            .collect();
        let lo = ivs.iter().any(|iv| iv.contains(i64::MIN));
        let hi = ivs.iter().any(|iv| iv.contains(i64::MAX));
        (pts, lo, hi)
    }

    proptest! {
        #[test]
        fn add_merges_into_sorted_disjoint_intervals(ivs in proptest::collection::vec(interval(), 0..20)) {
            let mut m = Intervals::new();
            for iv in &ivs {
                m.add(*iv);
            }
            for w in m.as_slice().windows(2) {
                // Sorted, and separated by at least one uncovered timestamp.
                prop_assert!(w[0].maxt < w[1].mint - 1, "{:?}", m);
            }
            prop_assert_eq!(covered(m.as_slice()), covered(&ivs));
            for t in -60..=60 {
                prop_assert_eq!(m.contains(t), ivs.iter().any(|iv| iv.contains(t)));
            }
        }

        #[test]
        fn file_round_trips(entries in proptest::collection::vec((0u64..1000, interval()), 0..50)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = TombstoneStore::new();
            for (r, iv) in &entries {
                store.add(*r, *iv);
            }
            let size = write(dir.path(), &store).unwrap();
            let (back, read_size) = read(dir.path()).unwrap();
            prop_assert_eq!(&back, &store);
            prop_assert_eq!(size, read_size);
            prop_assert_eq!(back.total(), store.iter().map(|(_, ivs)| ivs.len() as u64).sum::<u64>());
        }
    }

    #[test]
    fn adjacent_intervals_merge() {
        let mut m = Intervals::new();
        m.add(Interval::new(1, 2));
        m.add(Interval::new(5, 6));
        m.add(Interval::new(3, 4));
        assert_eq!(m.as_slice(), [Interval::new(1, 6)]);
        m.add(Interval::new(8, 9));
        m.add(Interval::new(i64::MIN, 0));
        assert_eq!(
            m.as_slice(),
            [Interval::new(i64::MIN, 6), Interval::new(8, 9)]
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (s, size) = read(dir.path()).unwrap();
        assert!(s.is_empty());
        assert_eq!(size, 0);
    }

    /// Prometheus 2.42 writes this 9-byte file for a block without tombstones.
    #[test]
    fn reads_and_writes_prometheus_empty_file() {
        let prom = include_bytes!("testdata/prometheus-2.42-block/tombstones");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOMBSTONES_FILENAME), prom).unwrap();
        let (s, size) = read(dir.path()).unwrap();
        assert!(s.is_empty());
        assert_eq!(size, 9);
        write(dir.path(), &s).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(TOMBSTONES_FILENAME)).unwrap(),
            prom
        );
    }

    #[test]
    fn byte_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TombstoneStore::new();
        s.add(3, Interval::new(-1, 2));
        write(dir.path(), &s).unwrap();
        let got = std::fs::read(dir.path().join(TOMBSTONES_FILENAME)).unwrap();
        let entries = [3u8, 1, 4];
        let mut want = vec![0x01, 0x30, 0xBA, 0x30, 1];
        want.extend_from_slice(&entries);
        want.extend_from_slice(&crc32c::crc32c(&entries).to_be_bytes());
        assert_eq!(got, want);
    }

    #[test]
    fn damage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TombstoneStore::new();
        for r in 0..5 {
            s.add(r, Interval::new(r as i64 * 10, r as i64 * 10 + 5));
        }
        write(dir.path(), &s).unwrap();
        let path = dir.path().join(TOMBSTONES_FILENAME);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x55;
            std::fs::write(&path, &b).unwrap();
            // The version byte is not covered by the CRC, but it is checked.
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("tombstones") && err.contains("byte"), "{err}");
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(read(dir.path()).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn truncate_and_remove() {
        let mut s = TombstoneStore::new();
        s.add(1, Interval::new(0, 10));
        s.add(1, Interval::new(20, 30));
        s.add(2, Interval::new(0, 5));
        assert_eq!(s.total(), 3);
        assert!(s.is_deleted(1, 25) && !s.is_deleted(1, 15));
        s.truncate_before(11);
        assert_eq!(s.total(), 1);
        assert_eq!(s.get(1).unwrap().as_slice(), [Interval::new(20, 30)]);
        s.remove(1);
        assert!(s.is_empty());
    }
}
