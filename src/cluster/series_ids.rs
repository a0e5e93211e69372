//! A WAL group's series id table: the ids that version 2 sample batches
//! (`cluster::wal_batch`) name series by, as every replica learns them by applying
//! the group's log (`docs/format/wal-group-entry.md`). State machine state: it is
//! carried by the group's snapshots (`series-ids` in the snapshot directory,
//! `docs/format/wal-group-snapshot.md`) and rebuilt by applying the log after one.
//! Ids the leader retires (a retirement entry) free their label sets and are
//! never assigned again.

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
/// The first bytes of that file: version 2 carries each id's state (undefined,
/// defined, retired); version 1, written before ids were retired, is still read.
const MAGIC: &[u8; 8] = b"HSIDS002";
/// The first bytes of a version 1 file (no retired ids).
const MAGIC_V1: &[u8; 8] = b"HSIDS001";
/// An id's state byte in a version 2 file.
const STATE_UNDEFINED: u8 = 0;
const STATE_DEFINED: u8 = 1;
const STATE_RETIRED: u8 = 2;

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
    #[error("series id {id} is retired")]
    Retired { id: u32 },
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
/// the id of a series it has not admitted lately, plus the set of retired ids.
///
/// Memory: every id ever assigned keeps a slot, 24 bytes (`Slot`: the `Labels`
/// pointer and the ref) plus 1 bit in `retired`, also once retired; a live id
/// adds its label set (shared with the head's series while the head holds it)
/// and one `by_hash` entry (about 16 bytes). A retired id's label set is freed,
/// so with series churn the table grows by 24 bytes per series ever seen rather
/// than by every label set ever seen.
#[derive(Debug, Default)]
pub struct SeriesIds {
    slots: Vec<Slot>,
    /// One bit per slot, set when the id is retired: a retired id names nothing,
    /// is never defined again, and a batch naming it is not applied.
    retired: Vec<u64>,
    /// Ids retired.
    retired_count: usize,
    /// Ids defined and not retired.
    live: usize,
    /// `Labels::map_hash` of a live id's labels → the newest id defined with
    /// them. A hash shared by two label sets keeps the newest; the other then
    /// misses, and the leader defines it again under a new id.
    by_hash: crate::fxhash::HashMap<u64, u32>,
    /// The empty label set, shared by every slot without labels (one allocation
    /// rather than one per retired id).
    empty: Labels,
}

impl SeriesIds {
    /// The next id free: one past the highest id defined.
    pub fn next_id(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Ids defined and not retired (gaps not counted).
    pub fn defined(&self) -> usize {
        self.live
    }

    /// Ids retired.
    pub fn retired(&self) -> usize {
        self.retired_count
    }

    /// Whether `id` is retired.
    pub fn is_retired(&self, id: u32) -> bool {
        self.retired
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Every live id with its label set and head ref hint, in id order.
    pub fn live_ids(&self) -> impl Iterator<Item = (u32, &Slot)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.labels.is_empty())
            .map(|(id, s)| (id as u32, s))
    }

    /// Retires the defined id `id`: frees its label set, and it is never defined
    /// again. Whether it was live (`false`: retired already). Retiring an id that
    /// was never defined is corruption: the leader retires only ids its table
    /// defines, and every replica applies the same entries in the same order.
    pub fn retire(&mut self, id: u32) -> Result<bool, IdError> {
        if self.is_retired(id) {
            return Ok(false);
        }
        let empty = self.empty.clone();
        let slot = match self.slots.get_mut(id as usize) {
            Some(s) if !s.labels.is_empty() => s,
            _ => return Err(IdError::Undefined { id }),
        };
        let labels = std::mem::replace(&mut slot.labels, empty);
        slot.series_ref = 0;
        let hash = labels.map_hash();
        if self.by_hash.get(&hash) == Some(&id) {
            self.by_hash.remove(&hash);
        }
        self.mark_retired(id);
        self.live -= 1;
        Ok(true)
    }

    /// Sets `id`'s retired bit (its slot exists).
    fn mark_retired(&mut self, id: u32) {
        let word = id as usize / 64;
        if self.retired.len() <= word {
            self.retired.resize(word + 1, 0);
        }
        self.retired[word] |= 1 << (id % 64);
        self.retired_count += 1;
    }

    /// Defines `id` as `labels`. Defining an id again with the same labels is
    /// allowed (a batch whose definition may not have been applied yet defines
    /// the id again); with other labels it is corruption.
    pub fn define(&mut self, id: u32, labels: Labels) -> Result<&mut Slot, IdError> {
        if labels.is_empty() {
            return Err(IdError::Empty { id });
        }
        if self.is_retired(id) {
            return Err(IdError::Retired { id });
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
            self.live += 1;
        } else if !(slot.labels.ptr_eq(&labels) || slot.labels == labels) {
            return Err(IdError::Redefined { id });
        }
        Ok(slot)
    }

    /// The defined id `id`.
    pub fn get_mut(&mut self, id: u32) -> Result<&mut Slot, IdError> {
        if self.is_retired(id) {
            return Err(IdError::Retired { id });
        }
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

    /// The table as a snapshot keeps it (version 2): `MAGIC`, the id count, each
    /// id's state byte, followed for a defined id by its label set as a batch
    /// writes it, and a CRC32 of all that.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 + self.live * 64 + self.slots.len());
        buf.extend_from_slice(MAGIC);
        put_uvarint(&mut buf, self.slots.len() as u64);
        for (id, s) in self.slots.iter().enumerate() {
            if self.is_retired(id as u32) {
                buf.push(STATE_RETIRED);
            } else if s.labels.is_empty() {
                buf.push(STATE_UNDEFINED);
            } else {
                buf.push(STATE_DEFINED);
                put_uvarint(&mut buf, s.labels.iter_bytes().count() as u64);
                buf.extend_from_slice(s.labels.encoded());
            }
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Reads a table written by `encode` (version 2) or before ids were retired
    /// (version 1: per id only its label count and labels, count 0 for a gap),
    /// checking its CRC and every label set.
    pub fn decode(b: &[u8]) -> Result<SeriesIds, IdError> {
        let bad = |why: String| IdError::File(why);
        if b.len() < MAGIC.len() + 4 {
            return Err(bad("not a series id table (too short)".into()));
        }
        let v1 = match &b[..MAGIC.len()] {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            _ => return Err(bad("not a series id table (unknown magic)".into())),
        };
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
            let state = if v1 {
                STATE_DEFINED
            } else {
                d.u8().map_err(|e| bad(e.to_string()))?
            };
            match state {
                STATE_UNDEFINED => {
                    out.slots.push(Slot::default());
                    continue;
                }
                STATE_RETIRED => {
                    out.slots.push(Slot::default());
                    out.mark_retired(id);
                    continue;
                }
                STATE_DEFINED => {}
                other => return Err(bad(format!("id {id}: unknown state {other}"))),
            }
            let nl = d.uvarint().map_err(|e| bad(e.to_string()))?;
            let start = d.position();
            for _ in 0..nl.saturating_mul(2) {
                let l = d.uvarint().map_err(|e| bad(e.to_string()))?;
                d.bytes(usize::try_from(l).unwrap_or(usize::MAX))
                    .map_err(|e| bad(e.to_string()))?;
            }
            let end = d.position();
            out.slots.push(Slot::default());
            if nl == 0 {
                if v1 {
                    // Version 1 writes a gap as label count 0.
                    continue;
                }
                return Err(bad(format!("id {id}: defined with no labels")));
            }
            let labels = Labels::from_encoded(&body[MAGIC.len() + start..MAGIC.len() + end])
                .map_err(|e| bad(format!("id {id}: {e}")))?;
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
    fn retired_ids_free_their_labels_and_are_never_defined_again() {
        let mut t = SeriesIds::default();
        t.define(0, l("a")).unwrap();
        t.define(1, l("b")).unwrap();
        assert_eq!(t.retire(0), Ok(true));
        // Retiring again is a no-op; an id never defined is corruption.
        assert_eq!(t.retire(0), Ok(false));
        assert_eq!(t.retire(5).unwrap_err(), IdError::Undefined { id: 5 });
        assert_eq!(t.defined(), 1);
        assert_eq!(t.retired(), 1);
        assert!(t.is_retired(0) && !t.is_retired(1));
        assert_eq!(t.find(&l("a"), l("a").map_hash()), None);
        assert_eq!(t.get_mut(0).unwrap_err(), IdError::Retired { id: 0 });
        assert_eq!(t.define(0, l("a")).unwrap_err(), IdError::Retired { id: 0 });
        // New ids keep counting up.
        assert_eq!(t.next_id(), 2);
        assert!(t.slots[0].labels.is_empty());
        assert_eq!(t.live_ids().map(|(id, _)| id).collect::<Vec<_>>(), [1]);
        // The same labels under a new id.
        t.define(2, l("a")).unwrap();
        assert_eq!(t.find(&l("a"), l("a").map_hash()), Some(2));
        // Retiring an older id of the same labels keeps the newer one found.
        t.define(3, l("b")).unwrap();
        t.retire(1).unwrap();
        assert_eq!(t.find(&l("b"), l("b").map_hash()), Some(3));
    }

    #[test]
    fn version_1_files_are_read_and_version_2_keeps_retired_ids() {
        // A version 1 file as it was written: ids 0 (a), 1 (gap), 2 (c).
        let mut v1 = MAGIC_V1.to_vec();
        put_uvarint(&mut v1, 3);
        for labels in [Some(l("a")), None, Some(l("c"))] {
            match labels {
                Some(x) => {
                    put_uvarint(&mut v1, x.iter_bytes().count() as u64);
                    v1.extend_from_slice(x.encoded());
                }
                None => put_uvarint(&mut v1, 0),
            }
        }
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let mut t = SeriesIds::decode(&v1).unwrap();
        assert_eq!((t.next_id(), t.defined(), t.retired()), (3, 2, 0));
        assert_eq!(t.find(&l("c"), l("c").map_hash()), Some(2));

        t.retire(0).unwrap();
        let b = t.encode();
        assert_eq!(&b[..8], b"HSIDS002");
        let back = SeriesIds::decode(&b).unwrap();
        assert_eq!((back.next_id(), back.defined(), back.retired()), (3, 1, 1));
        assert!(back.is_retired(0) && !back.is_retired(1) && !back.is_retired(2));
        assert_eq!(back.find(&l("c"), l("c").map_hash()), Some(2));
        assert_eq!(back.find(&l("a"), l("a").map_hash()), None);
    }

    proptest::proptest! {
        /// A body that passes the CRC yet is garbage is an error, not a panic.
        #[test]
        fn garbage_with_a_good_crc_is_an_error_not_a_panic(
            v1 in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut b = if v1 { MAGIC_V1.to_vec() } else { MAGIC.to_vec() };
            b.extend_from_slice(&body);
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            let _ = SeriesIds::decode(&b);
        }
    }

    #[test]
    fn a_version_2_file_with_a_bad_state_is_refused() {
        let mut b = MAGIC.to_vec();
        put_uvarint(&mut b, 1);
        b.push(9);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let e = SeriesIds::decode(&b).unwrap_err();
        assert!(e.to_string().contains("unknown state"), "{e}");
        // A definition with no labels.
        let mut b = MAGIC.to_vec();
        put_uvarint(&mut b, 1);
        b.push(STATE_DEFINED);
        put_uvarint(&mut b, 0);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert!(SeriesIds::decode(&b).is_err());
    }

    #[test]
    fn the_snapshot_file_round_trips_and_damage_is_refused() {
        let mut t = SeriesIds::default();
        t.define(0, l("a")).unwrap();
        t.define(3, l("d")).unwrap();
        t.define(4, l("e")).unwrap();
        t.retire(4).unwrap();
        let b = t.encode();
        let back = SeriesIds::decode(&b).unwrap();
        assert_eq!(back.next_id(), 5);
        assert_eq!(back.defined(), 2);
        assert!(back.is_retired(4));
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
