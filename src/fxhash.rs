//! Hash maps for hot paths: a fast multiply-rotate hasher (the "Fx" hash of rustc,
//! with xxh3 for byte strings) instead of the standard library's SipHash. The PromQL
//! engine hashes label sets and match keys for every series at every step, the
//! scrape loop looks up every sample's series text, and the head looks up series by
//! ref for every appended sample; SipHash's per-call setup costs more than such a
//! lookup itself. The keys come from stored series or scraped targets, as in
//! Prometheus, whose maps use an unseeded xxhash for the same purpose.

use std::hash::{BuildHasherDefault, Hasher};

/// Rustc's Fx hash: one rotate, xor and multiply per word written; byte strings
/// are first hashed with xxh3.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Byte strings (label sets, match keys) go through xxh3, which mixes every
        // byte into every bit; the word-at-a-time Fx step alone leaves keys that
        // differ in one label value clustered in the table.
        self.add(xxhash_rust::xxh3::xxh3_64(bytes));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the best-mixed bits at the top; hashbrown picks
        // buckets with the low bits, so they are rotated down (as rustc-hash 2 does).
        self.hash.rotate_left(26)
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type HashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
pub type HashSet<K> = std::collections::HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(x: &T) -> u64 {
        FxBuild::default().hash_one(x)
    }

    #[test]
    fn tells_apart_prefixes_and_padding() {
        assert_ne!(hash(b"a".as_slice()), hash(b"a\0".as_slice()));
        assert_ne!(hash(b"abcdefgh".as_slice()), hash(b"abcdefgh\0".as_slice()));
        assert_eq!(hash(b"job".as_slice()), hash(b"job".as_slice()));
    }

    #[test]
    fn maps_work_with_byte_keys() {
        let mut m: HashMap<Vec<u8>, usize> = HashMap::default();
        for i in 0..1000usize {
            m.insert(i.to_string().into_bytes(), i);
        }
        for i in 0..1000usize {
            assert_eq!(m.get(i.to_string().as_bytes()), Some(&i));
        }
    }
}
