//! A scrape loop's series cache: values by the series text a target writes, found
//! by the order of the last scrape first and by hash only when that guess fails.
//!
//! A target writes its series in the same order at every scrape, so the series
//! the last scrape saw at the position after the one just found is nearly always
//! the next one. Checking that guess is a comparison with one stored text, read in
//! the order the entries were created (close together in memory); a hash lookup
//! hashes the whole text and probes a table spread over memory, and per sample
//! that cost more than parsing the line. The hash index stays for the rest: new
//! series, reordered exposition, series that come and go.

use crate::fxhash::HashMap as FxMap;

/// Most entries one cache holds: entry indexes are `u32`.
const ENTRIES_MAX: usize = u32::MAX as usize;

/// An entry's index in the cache; stable while the entry lives.
pub type EntryId = u32;

struct Slot<V> {
    /// The series text as the target wrote it.
    text: Box<[u8]>,
    /// Position of the entry in the order of the pass that last found it.
    pos: u32,
    value: V,
}

/// Entries whose texts share one hash: nearly always one.
enum HashSlot {
    One(EntryId),
    Many(Vec<EntryId>),
}

/// Series text → `V`, with lookups guided by the last pass's order.
pub struct SeriesCache<V> {
    /// Entries by id; `None` for a free id (listed in `free`).
    slots: Vec<Option<Slot<V>>>,
    free: Vec<EntryId>,
    /// Ids by the text's hash (xxh3).
    by_hash: FxMap<u64, HashSlot>,
    /// Ids in the order the last finished pass found or inserted them.
    prev_order: Vec<EntryId>,
    /// The order of the current pass so far.
    order: Vec<EntryId>,
    /// Where in `prev_order` the next text is expected.
    cursor: usize,
}

impl<V> Default for SeriesCache<V> {
    fn default() -> Self {
        SeriesCache {
            slots: Vec::new(),
            free: Vec::new(),
            by_hash: FxMap::default(),
            prev_order: Vec::new(),
            order: Vec::new(),
            cursor: 0,
        }
    }
}

fn text_hash(text: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text)
}

impl<V> SeriesCache<V> {
    /// Starts a pass over one exposition: the order of the pass before becomes the
    /// guide for this one.
    pub fn begin_pass(&mut self) {
        std::mem::swap(&mut self.prev_order, &mut self.order);
        self.order.clear();
        self.cursor = 0;
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the entry for `text` and records it as the pass's next series.
    pub fn find(&mut self, text: &[u8]) -> Option<EntryId> {
        let guess = self.prev_order.get(self.cursor).copied();
        let id = match guess {
            Some(id) if self.text_is(id, text) => id,
            _ => self.find_by_hash(text)?,
        };
        let slot = self.slots[id as usize].as_mut().expect("live entry");
        self.cursor = slot.pos as usize + 1;
        slot.pos = self.order.len() as u32;
        self.order.push(id);
        Some(id)
    }

    /// Adds an entry for `text`, which `find` did not find, and records it as the
    /// pass's next series. None when the cache holds `ENTRIES_MAX` entries.
    pub fn insert(&mut self, text: &[u8], value: V) -> Option<EntryId> {
        let pos = self.order.len() as u32;
        let slot = Slot {
            text: text.into(),
            pos,
            value,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                if self.slots.len() >= ENTRIES_MAX {
                    return None;
                }
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as EntryId
            }
        };
        match self.by_hash.entry(text_hash(text)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(HashSlot::One(id));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let s = e.get_mut();
                match s {
                    HashSlot::One(other) => *s = HashSlot::Many(vec![*other, id]),
                    HashSlot::Many(v) => v.push(id),
                }
            }
        }
        self.order.push(id);
        Some(id)
    }

    #[cfg(test)]
    pub fn get(&self, id: EntryId) -> &V {
        &self.slots[id as usize].as_ref().expect("live entry").value
    }

    pub fn get_mut(&mut self, id: EntryId) -> &mut V {
        &mut self.slots[id as usize].as_mut().expect("live entry").value
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|s| &s.value)
    }

    /// Every value, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().flatten().map(|s| &mut s.value)
    }

    /// Keeps the entries for which `keep` says true. Dropping an entry the last
    /// pass found is allowed but makes its place in the order a failed guess.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for id in 0..self.slots.len() {
            let Some(slot) = self.slots[id].as_mut() else {
                continue;
            };
            if keep(&mut slot.value) {
                continue;
            }
            let slot = self.slots[id].take().expect("live entry");
            let id = id as EntryId;
            let h = text_hash(&slot.text);
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_hash.entry(h) {
                match e.get_mut() {
                    HashSlot::One(_) => {
                        e.remove();
                    }
                    HashSlot::Many(v) => {
                        v.retain(|x| *x != id);
                        if let [only] = v.as_slice() {
                            let only = *only;
                            *e.get_mut() = HashSlot::One(only);
                        }
                    }
                }
            }
            self.free.push(id);
        }
        // Drop free ids at the end so a cache that lost most entries gives memory
        // back.
        let live_end = self
            .slots
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        if live_end < self.slots.len() {
            self.slots.truncate(live_end);
            self.free.retain(|x| (*x as usize) < live_end);
        }
    }

    fn text_is(&self, id: EntryId, text: &[u8]) -> bool {
        self.slots
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| &*s.text == text)
    }

    fn find_by_hash(&self, text: &[u8]) -> Option<EntryId> {
        match self.by_hash.get(&text_hash(text))? {
            HashSlot::One(id) => self.text_is(*id, text).then_some(*id),
            HashSlot::Many(ids) => ids.iter().copied().find(|id| self.text_is(*id, text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(c: &mut SeriesCache<u32>, texts: &[&str]) -> Vec<u32> {
        c.begin_pass();
        texts
            .iter()
            .map(|t| match c.find(t.as_bytes()) {
                Some(id) => *c.get(id),
                None => {
                    let v = t.len() as u32 * 100 + t.as_bytes()[0] as u32;
                    c.insert(t.as_bytes(), v).unwrap();
                    v
                }
            })
            .collect()
    }

    #[test]
    fn finds_by_order_and_by_hash() {
        let mut c = SeriesCache::default();
        let first = pass(&mut c, &["a", "bb", "ccc"]);
        assert_eq!(c.len(), 3);
        // Same order, reordered, inserted in the middle, removed: same values.
        assert_eq!(pass(&mut c, &["a", "bb", "ccc"]), first);
        assert_eq!(
            pass(&mut c, &["ccc", "a", "bb"]),
            vec![first[2], first[0], first[1]]
        );
        assert_eq!(
            pass(&mut c, &["a", "dddd", "bb", "ccc"]),
            vec![first[0], 500, first[1], first[2]]
        );
        assert_eq!(pass(&mut c, &["a", "ccc"]), vec![first[0], first[2]]);
        assert_eq!(c.len(), 4);
        // A repeated text finds the same entry.
        assert_eq!(pass(&mut c, &["a", "a"]), vec![first[0], first[0]]);
    }

    #[test]
    fn retain_frees_ids_and_the_hash_index() {
        let mut c = SeriesCache::default();
        pass(&mut c, &["a", "b", "c"]);
        c.begin_pass();
        c.retain(|v| *v != 198);
        assert_eq!(c.len(), 2);
        c.begin_pass();
        assert!(c.find(b"b").is_none());
        assert!(c.find(b"a").is_some());
        let id = c.insert(b"x", 7).unwrap();
        assert_eq!(*c.get(id), 7);
        assert_eq!(c.len(), 3);
        c.begin_pass();
        assert_eq!(c.find(b"x"), Some(id));
        c.retain(|_| false);
        assert!(c.is_empty());
        assert!(c.slots.is_empty() && c.free.is_empty() && c.by_hash.is_empty());
    }

    #[test]
    fn texts_with_one_hash_are_told_apart() {
        let mut c: SeriesCache<u32> = SeriesCache::default();
        c.begin_pass();
        let a = c.insert(b"a", 1).unwrap();
        // Force a second entry under the same hash, as a collision would.
        let b = c.insert(b"b", 2).unwrap();
        let hb = text_hash(b"b");
        c.by_hash.remove(&hb);
        let ha = text_hash(b"a");
        c.by_hash.insert(ha, HashSlot::Many(vec![a, b]));
        c.by_hash.insert(hb, HashSlot::Many(vec![a, b]));
        c.begin_pass();
        c.prev_order.clear();
        assert_eq!(c.find(b"b"), Some(b));
        assert_eq!(c.find(b"a"), Some(a));
        c.retain(|v| *v != 1);
        c.begin_pass();
        c.prev_order.clear();
        assert_eq!(c.find(b"b"), Some(b));
        assert_eq!(c.find(b"a"), None);
    }
}
