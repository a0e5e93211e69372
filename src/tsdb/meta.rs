//! A block's `meta.json`: identity, time range, statistics and compaction history,
//! with Prometheus's field names and omissions (`tsdb/block.go` `BlockMeta`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use ulid::Ulid;

/// File name inside a block directory.
pub const META_FILENAME: &str = "meta.json";
/// The only meta file version (of the JSON layout, not of the index).
pub const META_VERSION_1: u32 = 1;
/// Largest `meta.json` we read; real ones are a few hundred bytes, though
/// `sources` grows with compaction.
pub const META_FILE_MAX_BYTES: u64 = 16 << 20;

/// Everything `meta.json` says about a block.
///
/// Fields Prometheus does not know (Thanos adds a `thanos` section, for example)
/// are ignored on read and therefore dropped when the file is rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Identity of the block; a rewritten block gets a new one.
    #[serde(with = "ulid_string")]
    pub ulid: Ulid,
    /// Earliest sample time in milliseconds, inclusive.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the block's range in milliseconds, exclusive.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    /// Prometheus always writes this object, even when every count is zero.
    #[serde(default)]
    pub stats: BlockStats,
    pub compaction: BlockMetaCompaction,
    /// Format version of this file; `write` always writes `META_VERSION_1`.
    pub version: u32,
}

/// Counts of what a block holds; zero counts are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockStats {
    #[serde(rename = "numSamples", skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(rename = "numFloatSamples", skip_serializing_if = "is_zero")]
    pub num_float_samples: u64,
    #[serde(rename = "numHistogramSamples", skip_serializing_if = "is_zero")]
    pub num_histogram_samples: u64,
    #[serde(rename = "numSeries", skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(rename = "numChunks", skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(rename = "numTombstones", skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

/// How the block came to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMetaCompaction {
    /// 1 for a block cut from the head; one more than its deepest input after compaction.
    pub level: u32,
    /// The level-1 blocks whose data this block holds.
    #[serde(default, with = "ulid_strings", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    /// Compaction produced no samples; the block should be removed on the next reload.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletable: bool,
    /// The direct inputs of the compaction that made this block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    /// A compaction of this block failed; it is not compacted again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    /// Free-form notes such as `"from-out-of-order"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// A parent block: its identity and time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDesc {
    #[serde(with = "ulid_string")]
    pub ulid: Ulid,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

/// `meta.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("block meta {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("block meta {}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl BlockMeta {
    /// The meta of a new level-1 block (cut from the head), its own only source.
    pub fn new(ulid: Ulid, min_time: i64, max_time: i64, stats: BlockStats) -> BlockMeta {
        BlockMeta {
            ulid,
            min_time,
            max_time,
            stats,
            compaction: BlockMetaCompaction {
                level: 1,
                sources: vec![ulid],
                ..BlockMetaCompaction::default()
            },
            version: META_VERSION_1,
        }
    }

    /// Reads and checks `dir/meta.json`.
    pub fn read(dir: &Path) -> Result<BlockMeta, MetaError> {
        let path = dir.join(META_FILENAME);
        let invalid = |what: String| MetaError::Invalid {
            path: path.clone(),
            what,
        };
        let len = std::fs::metadata(&path)
            .map_err(|source| MetaError::Io {
                path: path.clone(),
                op: "stat",
                source,
            })?
            .len();
        if len > META_FILE_MAX_BYTES {
            return Err(invalid(format!(
                "file is {len} bytes, over the {META_FILE_MAX_BYTES} byte limit"
            )));
        }
        let b = std::fs::read(&path).map_err(|source| MetaError::Io {
            path: path.clone(),
            op: "read",
            source,
        })?;
        let meta: BlockMeta = serde_json::from_slice(&b).map_err(|e| invalid(e.to_string()))?;
        if meta.version != META_VERSION_1 {
            return Err(invalid(format!(
                "unexpected meta file version {}",
                meta.version
            )));
        }
        Ok(meta)
    }

    /// Writes `dir/meta.json` atomically (temporary file, fsync, rename, fsync of
    /// the directory), tab-indented like Prometheus's. Returns the file size.
    pub fn write(&self, dir: &Path) -> Result<u64, MetaError> {
        let path = dir.join(META_FILENAME);
        let tmp = dir.join(format!("{META_FILENAME}.tmp"));
        let mut meta = self.clone();
        meta.version = META_VERSION_1;
        let json = to_go_json(&meta).map_err(|e| MetaError::Invalid {
            path: path.clone(),
            what: format!("encode: {e}"),
        })?;
        crate::tsdb::tombstones::write_atomically(&path, &tmp, &json)
            .map_err(|(op, source)| MetaError::Io { path, op, source })?;
        Ok(json.len() as u64)
    }
}

/// JSON as Go's `json.MarshalIndent(meta, "", "\t")` lays it out.
fn to_go_json(meta: &BlockMeta) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    meta.serialize(&mut ser)?;
    Ok(out)
}

/// A ULID as its 26-character string, as Go's `ulid.ULID` marshals.
mod ulid_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(u: &Ulid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
        let s = String::deserialize(d)?;
        Ulid::from_string(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid ULID {s:?}: {e}")))
    }
}

/// A list of ULIDs as strings.
mod ulid_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(us: &[Ulid], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(us.iter().map(|u| u.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ulid>, D::Error> {
        // Go's encoding/json reads `null` into a nil slice.
        let ss = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
        ss.iter()
            .map(|s| {
                Ulid::from_string(s)
                    .map_err(|e| serde::de::Error::custom(format!("invalid ULID {s:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PROM_META: &[u8] = include_bytes!("testdata/prometheus-2.42-block/meta.json");

    #[test]
    fn reads_and_rewrites_prometheus_meta_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_FILENAME), PROM_META).unwrap();
        let m = BlockMeta::read(dir.path()).unwrap();
        assert_eq!(m.ulid.to_string(), "01M8765JRHSCNN81HN57YZ1AXY");
        assert_eq!(m.min_time, 1_700_000_000_000);
        assert_eq!(m.max_time, 1_700_006_360_001);
        assert_eq!(m.stats.num_samples, 137);
        assert_eq!(m.stats.num_series, 11);
        assert_eq!(m.compaction.level, 1);
        assert_eq!(m.compaction.sources, [m.ulid]);
        let other = tempfile::tempdir().unwrap();
        let size = m.write(other.path()).unwrap();
        let written = std::fs::read(other.path().join(META_FILENAME)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(PROM_META)
        );
        assert_eq!(size, PROM_META.len() as u64);
    }

    #[test]
    fn omits_empty_fields_like_go() {
        let u = Ulid::from_string("01M8765JRHSCNN81HN57YZ1AXY").unwrap();
        let mut m = BlockMeta::new(u, 0, 10, BlockStats::default());
        m.compaction.sources.clear();
        let json = String::from_utf8(to_go_json(&m).unwrap()).unwrap();
        assert_eq!(
            json,
            "{\n\t\"ulid\": \"01M8765JRHSCNN81HN57YZ1AXY\",\n\t\"minTime\": 0,\n\t\"maxTime\": 10,\n\t\"stats\": {},\n\t\"compaction\": {\n\t\t\"level\": 1\n\t},\n\t\"version\": 1\n}"
        );
    }

    #[test]
    fn rejects_bad_files_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = BlockMeta::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("meta.json"), "{err}");
        for bad in [
            "{",
            r#"{"ulid":"nope","minTime":0,"maxTime":1,"compaction":{"level":1},"version":1}"#,
            r#"{"ulid":"01M8765JRHSCNN81HN57YZ1AXY","minTime":0,"maxTime":1,"compaction":{"level":1},"version":2}"#,
        ] {
            std::fs::write(dir.path().join(META_FILENAME), bad).unwrap();
            let err = BlockMeta::read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("meta.json"), "{err}");
        }
    }

    fn ulid() -> impl Strategy<Value = Ulid> {
        any::<u128>().prop_map(Ulid)
    }

    proptest! {
        #[test]
        fn round_trips(
            id in ulid(),
            min_time in any::<i64>(),
            max_time in any::<i64>(),
            counts in proptest::array::uniform6(0u64..3),
            level in 1u32..6,
            sources in proptest::collection::vec(ulid(), 0..4),
            parents in proptest::collection::vec((ulid(), any::<i64>(), any::<i64>()), 0..3),
            deletable in any::<bool>(),
            failed in any::<bool>(),
            hints in proptest::collection::vec("[a-z-]{1,20}", 0..2),
        ) {
            let m = BlockMeta {
                ulid: id,
                min_time,
                max_time,
                stats: BlockStats {
                    num_samples: counts[0],
                    num_float_samples: counts[1],
                    num_histogram_samples: counts[2],
                    num_series: counts[3],
                    num_chunks: counts[4],
                    num_tombstones: counts[5],
                },
                compaction: BlockMetaCompaction {
                    level,
                    sources,
                    deletable,
                    parents: parents
                        .into_iter()
                        .map(|(ulid, min_time, max_time)| BlockDesc { ulid, min_time, max_time })
                        .collect(),
                    failed,
                    hints,
                },
                version: META_VERSION_1,
            };
            let dir = tempfile::tempdir().unwrap();
            m.write(dir.path()).unwrap();
            prop_assert_eq!(BlockMeta::read(dir.path()).unwrap(), m);
        }
    }
}
