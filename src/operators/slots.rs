//! Dense slot numbers for keys. An operator that keeps per-key state in vectors indexed by slot
//! finds each key's slot in one index and reaches its states by position, so it can have the CPU
//! fetch both the index entry and the states a few events before it needs them, and reuse the
//! state vectors from window to window.
//!
//! The index is an open-addressing table of one word per bucket (the slot and part of its key's
//! hash), so that a table for hundreds of thousands of keys stays a few MiB and in cache, and
//! whose bucket for a hash is known before the lookup. The keys themselves lie with their slots.

/// Keys and their slots; a slot is freed once no state of its key may remain.
pub struct KeySlots<K> {
    /// Linear probing, at most half full; the length is a power of two (or zero). An empty
    /// bucket is 0; a full one holds the high half of its key's hash above its slot + 1.
    buckets: Vec<u64>,
    /// How many buckets are full.
    live: usize,
    /// Each slot's key, hash and lifetime (stale for a free slot).
    entries: Vec<Entry<K>>,
    /// Slots to reuse.
    free: Vec<u32>,
}

struct Entry<K> {
    hash: u64,
    /// The key's states are all gone by this time; [`FREE`] once the slot is free.
    until: i64,
    key: K,
}

/// The `until` of a free slot.
const FREE: i64 = i64::MIN;

impl<K> Default for KeySlots<K> {
    fn default() -> Self {
        KeySlots {
            buckets: Vec::new(),
            live: 0,
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K> KeySlots<K> {
    /// Asks the CPU to bring the bucket where a lookup of `hash` starts into cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(self.home(hash)) {
            super::prefetch(bucket);
        }
    }

    /// Asks the CPU to bring the key that a lookup of `hash` most likely compares with into
    /// cache: that of the bucket where the lookup starts, if its part of the hash matches. Called
    /// a few lookups after [`KeySlots::prefetch`] for the same hash, when that bucket is cached.
    #[inline]
    pub fn prefetch_key(&self, hash: u64) {
        let Some(&bucket) = self.buckets.get(self.home(hash)) else {
            return;
        };
        if Self::may_hold(bucket, hash)
            && let Some(entry) = self.entries.get(Self::slot_of(bucket))
        {
            super::prefetch(&entry.key);
        }
    }

    /// The slot of the key whose hash is `hash` and which `matches` says is the key sought (a
    /// new slot, for the key `make` makes, if it has none), kept until [`KeySlots::release`]
    /// passes `until`.
    #[inline]
    pub fn slot(
        &mut self,
        hash: u64,
        until: i64,
        matches: impl Fn(&K) -> bool,
        make: impl FnOnce() -> K,
    ) -> usize {
        if (self.live + 1) * 2 > self.buckets.len() {
            self.rebuild((self.buckets.len() * 2).max(16));
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(hash);
        while self.buckets[at] != 0 {
            let bucket = self.buckets[at];
            if Self::may_hold(bucket, hash) {
                let slot = Self::slot_of(bucket);
                let entry = &mut self.entries[slot];
                if matches(&entry.key) {
                    entry.until = entry.until.max(until);
                    return slot;
                }
            }
            at = (at + 1) & mask;
        }
        let entry = Entry {
            hash,
            until,
            key: make(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1)
                    .ok()
                    .filter(|&slot| slot < u32::MAX)
                    .expect("fewer than 2^32 - 1 live keys")
            }
        };
        self.buckets[at] = Self::bucket(hash, slot);
        self.live += 1;
        slot as usize
    }

    /// The bucket of `slot`, whose key hashes to `hash`.
    #[inline]
    fn bucket(hash: u64, slot: u32) -> u64 {
        (hash & !u64::from(u32::MAX)) | u64::from(slot + 1)
    }

    /// Whether `bucket` is full and its part of the hash is `hash`'s: whether its slot may hold
    /// the key of `hash`.
    #[inline]
    fn may_hold(bucket: u64, hash: u64) -> bool {
        bucket != 0 && bucket >> 32 == hash >> 32
    }

    /// The slot of a full bucket.
    #[inline]
    fn slot_of(bucket: u64) -> usize {
        (bucket as u32 - 1) as usize
    }

    /// The bucket where a lookup of `hash` starts.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.buckets.len().wrapping_sub(1)
    }

    /// How many keys hold a slot.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The key of a slot in use.
    pub fn key(&self, slot: usize) -> &K {
        &self.entries[slot].key
    }

    /// The hash of the key of a slot in use.
    pub fn hash(&self, slot: usize) -> u64 {
        self.entries[slot].hash
    }

    /// Frees the slots of keys kept only until `time` or before.
    pub fn release(&mut self, time: i64) {
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            if entry.until != FREE && entry.until <= time {
                entry.until = FREE;
                self.free.push(slot as u32);
            }
        }
        self.rebuild(self.buckets.len());
    }

    /// Indexes the slots in use in a table of `len` buckets. The table keeps its memory when it
    /// does not grow: at a word per bucket it is small, and fresh memory is costly to fault in.
    fn rebuild(&mut self, len: usize) {
        self.buckets.clear();
        self.buckets.resize(len, 0);
        self.live = 0;
        let mask = len.wrapping_sub(1);
        for (slot, entry) in self.entries.iter().enumerate() {
            if entry.until == FREE {
                continue;
            }
            let mut at = self.home(entry.hash);
            while self.buckets[at] != 0 {
                at = (at + 1) & mask;
            }
            self.buckets[at] = Self::bucket(entry.hash, slot as u32);
            self.live += 1;
        }
    }

    /// Frees every slot.
    pub fn clear(&mut self) {
        *self = KeySlots::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rustc_hash::FxBuildHasher;

    use super::*;

    #[test]
    fn slots_are_dense_stable_and_reused_once_released() {
        let mut slots = KeySlots::default();
        let slot = |slots: &mut KeySlots<&str>, key: &'static str, until| {
            slots.slot(FxBuildHasher.hash_one(key), until, |k| *k == key, || key)
        };
        assert_eq!(slot(&mut slots, "a", 10), 0);
        assert_eq!(slot(&mut slots, "b", 20), 1);
        assert_eq!(slot(&mut slots, "a", 30), 0);
        slots.release(20);
        // "b" was kept until 20, "a" until 30 (the later of its two uses).
        assert_eq!(slot(&mut slots, "a", 30), 0);
        assert_eq!(slot(&mut slots, "c", 40), 1);
        assert_eq!((slots.key(0), slots.key(1)), (&"a", &"c"));
        slots.release(40);
        assert!(slot(&mut slots, "d", 50) < 2, "a freed slot is reused");
    }

    /// Against a map, over many keys, growth and releases: a live key keeps its slot, and no two
    /// live keys share one.
    #[test]
    fn live_keys_keep_distinct_slots_through_growth_and_release() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut slots = KeySlots::default();
        let mut expected: HashMap<u64, (usize, i64)> = HashMap::new();
        for round in 0..40i64 {
            for _ in 0..2_000 {
                let key = rng.random_range(0..5_000u64);
                let until = round + rng.random_range(1..4);
                let hash = FxBuildHasher.hash_one(key);
                let slot = slots.slot(hash, until, |k| *k == key, || key);
                let (known, kept) = expected.entry(key).or_insert((slot, until));
                assert_eq!(*known, slot, "key {key} moved");
                *kept = (*kept).max(until);
                assert_eq!(slots.key(slot), &key);
            }
            slots.release(round);
            expected.retain(|_, (_, until)| *until > round);
            let mut taken: Vec<usize> = expected.values().map(|(slot, _)| *slot).collect();
            taken.sort_unstable();
            taken.dedup();
            assert_eq!(taken.len(), expected.len(), "two live keys share a slot");
            assert_eq!(slots.live, expected.len());
        }
    }
}
