//! The consistent-hash ring that assigns work (scrape targets, rule groups) to
//! members. Built from the committed active member set at a ring epoch, so every node
//! computes the same owners. Wraps the `consistent_hash` crate with a hash of
//! explicit little-endian bytes (xxh3), which no Rust version or platform changes.

use super::state::NodeId;
use consistent_hash::{Node, RingHash, StaticHashRing};
use std::hash::{Hash, Hasher};

/// Virtual nodes per member: enough that three members get within a few percent of
/// a third each.
pub const VNODES_PER_MEMBER: usize = 128;

/// Seed of the xxh3 hash. Changing it moves every target: never do.
const RING_HASH_SEED: u64 = 0x6865_6172_7468_0001; // "hearth" + version 1

/// The ring cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("ring: no active members at epoch {epoch}")]
    Empty { epoch: u64 },
}

/// `consistent_hash::RingHash` over explicit bytes: xxh3-64 with a fixed seed of
/// the bytes fed to it, where integers are fed little-endian (`ByteHasher`).
#[derive(Debug, Clone, Copy, Default)]
pub struct XxRingHash;

impl RingHash for XxRingHash {
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        let mut h = ByteHasher::default();
        item.hash(&mut h);
        h.digest()
    }

    fn hash_vnode<K: Hash>(&self, node_key: &K, vnode_seq: usize) -> u64 {
        let mut h = ByteHasher::default();
        node_key.hash(&mut h);
        h.bytes.extend_from_slice(b"#vnode");
        h.bytes.extend_from_slice(&(vnode_seq as u64).to_le_bytes());
        h.digest()
    }
}

/// A `Hasher` that records the bytes it is fed, every integer as little-endian
/// 8 bytes or its own width, so `Hash` impls produce the same bytes everywhere
/// (std's hashers use native endianness and a platform-sized `usize`).
#[derive(Default)]
struct ByteHasher {
    bytes: Vec<u8>,
}

impl ByteHasher {
    fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&self.bytes, RING_HASH_SEED)
    }
}

impl Hasher for ByteHasher {
    fn finish(&self) -> u64 {
        self.digest()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
    fn write_u8(&mut self, i: u8) {
        self.bytes.push(i);
    }
    fn write_u16(&mut self, i: u16) {
        self.bytes.extend_from_slice(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.bytes.extend_from_slice(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.bytes.extend_from_slice(&i.to_le_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.bytes.extend_from_slice(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_i8(&mut self, i: i8) {
        self.write_u8(i as u8);
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

/// A key placed on the ring: its bytes exactly, with no length prefix.
struct RingKey<'a>(&'a [u8]);

impl Hash for RingKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Placement of keys on the active members at one ring epoch.
pub struct Ring {
    epoch: u64,
    members: Vec<NodeId>,
    ring: StaticHashRing<'static, NodeId, (), XxRingHash>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("epoch", &self.epoch)
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// Builds the ring of `members` (duplicates are ignored) at `epoch`, with
    /// `VNODES_PER_MEMBER` virtual nodes each.
    pub fn new(members: impl IntoIterator<Item = NodeId>, epoch: u64) -> Result<Ring, RingError> {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Err(RingError::Empty { epoch });
        }
        let ring = StaticHashRing::new(
            XxRingHash,
            members
                .iter()
                .map(|id| Node::new(*id).quantity(VNODES_PER_MEMBER)),
        );
        Ok(Ring {
            epoch,
            members,
            ring,
        })
    }

    /// The epoch the ring was built at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members on the ring, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The member that owns `key` (a target's job and label set, a rule group's file
    /// and name, encoded by the caller).
    pub fn owner(&self, key: &[u8]) -> NodeId {
        self.successors(key, 1)
            .first()
            .copied()
            // The ring is never empty (checked in `new`), so there is a first candidate.
            .unwrap_or(self.members[0])
    }

    /// Up to `n` distinct members for `key` in order of preference: the owner first,
    /// then the members that take over if it goes.
    pub fn successors(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.ring
            .calc_candidates(&RingKey(key))
            .take(n)
            .map(|node| node.key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn empty_ring_is_an_error() {
        assert_eq!(Ring::new([], 7).unwrap_err(), RingError::Empty { epoch: 7 });
    }

    /// Pins placements: these must never change, or a rolling upgrade would move
    /// targets between nodes that disagree about their owner.
    #[test]
    fn golden_placements() {
        let ring = Ring::new([1, 2, 3], 1).unwrap();
        let got: Vec<(String, Vec<NodeId>)> = ["", "a", "job=node,instance=host1:9100", "up"]
            .iter()
            .map(|k| (k.to_string(), ring.successors(k.as_bytes(), 3)))
            .collect();
        let want: Vec<(String, Vec<NodeId>)> = vec![
            ("".into(), GOLDEN[0].to_vec()),
            ("a".into(), GOLDEN[1].to_vec()),
            ("job=node,instance=host1:9100".into(), GOLDEN[2].to_vec()),
            ("up".into(), GOLDEN[3].to_vec()),
        ];
        assert_eq!(got, want);
        let counts = owner_counts(&ring, 1000);
        assert_eq!(counts, GOLDEN_COUNTS.iter().copied().collect());
    }

    const GOLDEN: [[NodeId; 3]; 4] = [[3, 1, 2], [2, 3, 1], [1, 3, 2], [3, 1, 2]];
    const GOLDEN_COUNTS: [(NodeId, usize); 3] = [(1, 324), (2, 336), (3, 340)];

    fn owner_counts(ring: &Ring, n: usize) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            *counts
                .entry(ring.owner(format!("target-{i}").as_bytes()))
                .or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn successors_are_distinct_and_start_with_the_owner() {
        let ring = Ring::new([5, 1, 3, 3], 2).unwrap();
        assert_eq!(ring.members(), &[1, 3, 5]);
        for i in 0..200 {
            let key = format!("k{i}");
            let s = ring.successors(key.as_bytes(), 10);
            assert_eq!(s.len(), 3);
            assert_eq!(s[0], ring.owner(key.as_bytes()));
            let mut d = s.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
    }

    #[test]
    fn load_is_balanced_within_a_few_percent() {
        let ring = Ring::new([1, 2, 3], 1).unwrap();
        let counts = owner_counts(&ring, 30_000);
        for (id, c) in counts {
            assert!(
                (8_000..12_000).contains(&c),
                "member {id} owns {c} of 30000 keys"
            );
        }
    }

    /// Adding a member moves keys only to the new member, never between old ones.
    #[test]
    fn adding_a_member_moves_keys_only_to_it() {
        let before = Ring::new([1, 2, 3], 1).unwrap();
        let after = Ring::new([1, 2, 3, 4], 2).unwrap();
        let mut moved = 0;
        for i in 0..10_000 {
            let key = format!("target-{i}");
            let (a, b) = (before.owner(key.as_bytes()), after.owner(key.as_bytes()));
            if a != b {
                assert_eq!(b, 4, "{key} moved from {a} to {b}");
                moved += 1;
            }
        }
        assert!((1_500..3_500).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn byte_hasher_is_little_endian() {
        let mut h = ByteHasher::default();
        0x0102_0304u32.hash(&mut h);
        7usize.hash(&mut h);
        assert_eq!(h.bytes, [4, 3, 2, 1, 7, 0, 0, 0, 0, 0, 0, 0]);
    }
}
