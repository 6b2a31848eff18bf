//! Dense slot numbers for keys. An operator that keeps per-key state in vectors indexed by slot
//! finds each key's slot in one index and reaches its states by position, so it can have the CPU
//! fetch both the index entry and the states a few events before it needs them, and reuse the
//! state vectors from window to window.
//!
//! The index is an open-addressing table whose buckets hold the key, so one cache line answers a
//! lookup, and whose bucket for a hash is known before the lookup: with hundreds of thousands of
//! keys, waiting for that line is most of what a general-purpose hash map costs per event here.

use std::hash::{BuildHasher, Hash};

use rustc_hash::FxBuildHasher;

/// Keys and their slots; a slot is freed once no state of its key may remain.
pub struct KeySlots<K> {
    /// Linear probing, at most half full; the length is a power of two (or zero).
    buckets: Vec<Option<Bucket<K>>>,
    /// How many buckets are full.
    live: usize,
    /// The previous table, emptied, for the next rebuild to reuse.
    spare: Vec<Option<Bucket<K>>>,
    /// The key of each slot (stale for a free slot).
    keys: Vec<K>,
    /// Slots to reuse.
    free: Vec<u32>,
}

struct Bucket<K> {
    hash: u64,
    /// The key's states are all gone by this time.
    until: i64,
    slot: u32,
    key: K,
}

impl<K> Default for KeySlots<K> {
    fn default() -> Self {
        KeySlots {
            buckets: Vec::new(),
            live: 0,
            spare: Vec::new(),
            keys: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> KeySlots<K> {
    /// The hash [`KeySlots::slot`] and [`KeySlots::prefetch`] take for `key`.
    #[inline]
    pub fn hash(key: &K) -> u64 {
        FxBuildHasher.hash_one(key)
    }

    /// Asks the CPU to bring the bucket where a lookup of `hash` starts into cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self
            .buckets
            .get(hash as usize & self.buckets.len().wrapping_sub(1))
        {
            super::prefetch(bucket);
        }
    }

    /// The slot of `key`, whose hash is `hash` (a new slot if it has none), kept until
    /// [`KeySlots::release`] passes `until`.
    #[inline]
    pub fn slot(&mut self, key: K, hash: u64, until: i64) -> usize {
        if (self.live + 1) * 2 > self.buckets.len() {
            self.rebuild((self.buckets.len() * 2).max(16), i64::MIN);
        }
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        while let Some(bucket) = &mut self.buckets[at] {
            if bucket.hash == hash && bucket.key == key {
                bucket.until = bucket.until.max(until);
                return bucket.slot as usize;
            }
            at = (at + 1) & mask;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot as usize] = key.clone();
                slot
            }
            None => {
                self.keys.push(key.clone());
                u32::try_from(self.keys.len() - 1).expect("fewer than 2^32 live keys")
            }
        };
        self.buckets[at] = Some(Bucket {
            hash,
            until,
            slot,
            key,
        });
        self.live += 1;
        slot as usize
    }

    /// How many keys hold a slot.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The key of a slot in use.
    pub fn key(&self, slot: usize) -> &K {
        &self.keys[slot]
    }

    /// Frees the slots of keys kept only until `time` or before.
    pub fn release(&mut self, time: i64) {
        let kept = self.buckets.iter().flatten().filter(|b| b.until > time);
        let len = (kept.count() * 2 + 1).next_power_of_two().max(16);
        self.rebuild(len, time);
    }

    /// Moves the buckets of keys kept after `time` into a table of `len` buckets, and frees the
    /// slots of the others.
    fn rebuild(&mut self, len: usize, time: i64) {
        let mut old = std::mem::replace(&mut self.buckets, std::mem::take(&mut self.spare));
        self.buckets.clear();
        self.buckets.resize_with(len, || None);
        self.live = 0;
        let mask = len - 1;
        for bucket in old.drain(..).flatten() {
            if bucket.until <= time {
                self.free.push(bucket.slot);
                continue;
            }
            let mut at = bucket.hash as usize & mask;
            while self.buckets[at].is_some() {
                at = (at + 1) & mask;
            }
            self.buckets[at] = Some(bucket);
            self.live += 1;
        }
        self.spare = old;
    }

    /// Frees every slot.
    pub fn clear(&mut self) {
        *self = KeySlots::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn slots_are_dense_stable_and_reused_once_released() {
        let mut slots = KeySlots::default();
        let slot =
            |slots: &mut KeySlots<&str>, key, until| slots.slot(key, KeySlots::hash(&key), until);
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
                let slot = slots.slot(key, KeySlots::hash(&key), until);
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
