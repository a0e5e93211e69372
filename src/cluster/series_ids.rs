//! A WAL group's series id table: the ids that version 2 sample batches
//! (`cluster::wal_batch`) name series by, as every replica learns them by applying
//! the group's log (`docs/format/wal-group-entry.md`). State machine state: it is
//! carried by the group's snapshots (`series-ids` in the snapshot directory,
//! `docs/format/wal-group-snapshot.md`) and rebuilt by applying the log after one.

use crate::encoding::{put_uvarint, Decoder};
use crate::labels::Labels;
use crate::storage::SeriesRef;

/// How far past the table's end a definition may put its id. The leader assigns
/// ids densely in admission order, but entries reach the log in the order their
/// writes were proposed, and a write refused at admission leaves its ids unused:
/// small gaps are normal, a big one is corruption.
pub const ID_GAP_MAX: u32 = 1 << 24;
/// The file a snapshot keeps the table in.
pub const SNAPSHOT_FILE: &str = "series-ids";
/// The first bytes of that file.
const MAGIC: &[u8; 8] = b"HSIDS001";

/// A definition or reference that contradicts the table: the entry is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("series id {id} is not defined")]
    Undefined { id: u32 },
    #[error("series id {id} is defined already, with another label set")]
    Redefined { id: u32 },
    #[error("series id {id} is more than {ID_GAP_MAX} past the table's end ({len})")]
    Gap { id: u32, len: u32 },
    #[error("series id {id} is defined with an empty label set")]
    Empty { id: u32 },
    #[error("series id table: {0}")]
    File(String),
}

/// One id: its label set (empty while undefined: a gap) and the group TSDB's ref
/// of the series when this replica last appended to it (0: look it up), which the
/// TSDB checks against the labels, so a stale one only costs a lookup.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    pub labels: Labels,
    pub series_ref: SeriesRef,
}

/// id → label set (and head ref), plus label hash → id for the leader to find
/// the id of a series it has not admitted lately. Per series: one `Slot` (the
/// `Labels` pointer, shared with the head's series, and the ref) and one map
/// entry.
#[derive(Debug, Default)]
pub struct SeriesIds {
    slots: Vec<Slot>,
    /// `Labels::map_hash` of a defined id's labels → the newest id defined with
    /// them. A hash shared by two label sets keeps the newest; the other then
    /// misses, and the leader defines it again under a new id.
    by_hash: crate::fxhash::HashMap<u64, u32>,
}

impl SeriesIds {
    /// The next id free: one past the highest id defined.
    pub fn next_id(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Ids defined (gaps not counted).
    pub fn defined(&self) -> usize {
        self.by_hash.len()
    }

    /// Defines `id` as `labels`. Defining an id again with the same labels is
    /// allowed (a batch whose definition may not have been applied yet defines
    /// the id again); with other labels it is corruption.
    pub fn define(&mut self, id: u32, labels: Labels) -> Result<&mut Slot, IdError> {
        if labels.is_empty() {
            return Err(IdError::Empty { id });
        }
        let len = self.next_id();
        if id >= len {
            if id - len > ID_GAP_MAX {
                return Err(IdError::Gap { id, len });
            }
            self.slots.resize_with(id as usize + 1, Slot::default);
        }
        let slot = &mut self.slots[id as usize];
        if slot.labels.is_empty() {
            self.by_hash.insert(labels.map_hash(), id);
            slot.labels = labels;
        } else if !(slot.labels.ptr_eq(&labels) || slot.labels == labels) {
            return Err(IdError::Redefined { id });
        }
        Ok(slot)
    }

    /// The defined id `id`.
    pub fn get_mut(&mut self, id: u32) -> Result<&mut Slot, IdError> {
        match self.slots.get_mut(id as usize) {
            Some(s) if !s.labels.is_empty() => Ok(s),
            _ => Err(IdError::Undefined { id }),
        }
    }

    /// The newest id defined as `labels`, whose `Labels::map_hash` is `hash`.
    pub fn find(&self, labels: &Labels, hash: u64) -> Option<u32> {
        let id = *self.by_hash.get(&hash)?;
        let slot = &self.slots[id as usize];
        (slot.labels.ptr_eq(labels) || slot.labels == *labels).then_some(id)
    }

    /// Forgets every head ref (the head was replaced).
    pub fn clear_refs(&mut self) {
        for s in &mut self.slots {
            s.series_ref = 0;
        }
    }

    /// The table as a snapshot keeps it: `MAGIC`, the id count, each id's label
    /// set (label count 0 for a gap) as a batch writes it, and a CRC32 of all that.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 + self.slots.len() * 64);
        buf.extend_from_slice(MAGIC);
        put_uvarint(&mut buf, self.slots.len() as u64);
        for s in &self.slots {
            put_uvarint(&mut buf, s.labels.iter_bytes().count() as u64);
            buf.extend_from_slice(s.labels.encoded());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Reads a table written by `encode`, checking its CRC and every label set.
    pub fn decode(b: &[u8]) -> Result<SeriesIds, IdError> {
        let bad = |why: String| IdError::File(why);
        if b.len() < MAGIC.len() + 4 || &b[..MAGIC.len()] != MAGIC {
            return Err(bad("not a series id table".into()));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let mut want = [0u8; 4];
        want.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(want) {
            return Err(bad("CRC mismatch".into()));
        }
        let mut d = Decoder::new(&body[MAGIC.len()..]);
        let n = d.uvarint().map_err(|e| bad(e.to_string()))?;
        // Every id takes at least one byte.
        if n > d.remaining() as u64 || n > u64::from(u32::MAX) {
            return Err(bad(format!("id count {n} exceeds the bytes left")));
        }
        let mut out = SeriesIds::default();
        out.slots.reserve(n as usize);
        for id in 0..n as u32 {
            let nl = d.uvarint().map_err(|e| bad(e.to_string()))?;
            let start = d.position();
            for _ in 0..nl.saturating_mul(2) {
                let l = d.uvarint().map_err(|e| bad(e.to_string()))?;
                d.bytes(usize::try_from(l).unwrap_or(usize::MAX))
                    .map_err(|e| bad(e.to_string()))?;
            }
            let end = d.position();
            if nl == 0 {
                out.slots.push(Slot::default());
                continue;
            }
            let labels = Labels::from_encoded(&body[MAGIC.len() + start..MAGIC.len() + end])
                .map_err(|e| bad(format!("id {id}: {e}")))?;
            out.slots.push(Slot::default());
            out.define(id, labels)?;
        }
        if !d.is_empty() {
            return Err(bad(format!("{} trailing bytes", d.remaining())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &str) -> Labels {
        Labels::from_pairs(&[("__name__", "m"), ("i", v)])
    }

    #[test]
    fn defines_finds_and_refuses_contradictions() {
        let mut t = SeriesIds::default();
        t.define(0, l("a")).unwrap();
        // A gap, as a write refused at admission leaves.
        t.define(2, l("c")).unwrap();
        assert_eq!(t.next_id(), 3);
        assert_eq!(t.find(&l("c"), l("c").map_hash()), Some(2));
        assert_eq!(t.find(&l("b"), l("b").map_hash()), None);
        // Defined again with the same labels: allowed.
        t.define(0, l("a")).unwrap();
        assert_eq!(
            t.define(0, l("x")).unwrap_err(),
            IdError::Redefined { id: 0 }
        );
        assert_eq!(t.get_mut(1).unwrap_err(), IdError::Undefined { id: 1 });
        assert_eq!(t.get_mut(7).unwrap_err(), IdError::Undefined { id: 7 });
        assert!(matches!(
            t.define(u32::MAX, l("z")),
            Err(IdError::Gap { .. })
        ));
        assert!(matches!(
            t.define(5, Labels::empty()),
            Err(IdError::Empty { id: 5 })
        ));
        // The same labels under a second id: the newest is found.
        t.define(3, l("a")).unwrap();
        assert_eq!(t.find(&l("a"), l("a").map_hash()), Some(3));
    }

    #[test]
    fn the_snapshot_file_round_trips_and_damage_is_refused() {
        let mut t = SeriesIds::default();
        t.define(0, l("a")).unwrap();
        t.define(3, l("d")).unwrap();
        let b = t.encode();
        let back = SeriesIds::decode(&b).unwrap();
        assert_eq!(back.next_id(), 4);
        assert_eq!(back.defined(), 2);
        assert_eq!(back.find(&l("d"), l("d").map_hash()), Some(3));
        assert!(back.slots[1].labels.is_empty());
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(SeriesIds::decode(&bad).is_err(), "byte {i}");
        }
        assert!(SeriesIds::decode(&b[..b.len() - 1]).is_err());
        assert!(SeriesIds::decode(b"").is_err());
    }
}
