//! Which worker owns a key: the shard function of keyed state, the same as timely's `Exchange`.
//!
//! Every keyed entry is stored with the 64-bit hash its operator exchanges it by, and belongs to
//! worker `hash % peers`, which is what timely's exchange pact computes (as `hash & (peers - 1)`
//! when `peers` is a power of two, the same number). The hash must be a pure function of the key
//! (Eddy's operators use `FxHasher`, which has no per-process seed, never `RandomState`), so that
//! it is the same in every run and process; it is stored rather than recomputed, so restoring
//! needs no hash function and a change of hash function cannot misplace old state.
//!
//! Restoring with `peers` workers where the checkpoint was written by `n`, worker `i` keeps the
//! entries whose hash it owns. A run written by worker `w` of `n` holds only hashes with
//! `hash % n == w`, and such a hash can have `hash % peers == i` only if `w` and `i` agree modulo
//! `gcd(n, peers)`; so worker `i` reads only those runs: with an unchanged worker count, just its
//! own.

/// The worker of `peers` that owns keys of hash `hash`.
///
/// # Examples
///
/// ```
/// use eddy::state::owner;
///
/// assert_eq!(owner(7, 1), 0);
/// assert_eq!(owner(7, 2), 1);
/// assert_eq!(owner(7, 3), 1);
/// ```
pub fn owner(hash: u64, peers: usize) -> usize {
    (hash % peers as u64) as usize
}

/// Whether a run written by worker `writer` of `writers`, all of whose keys that worker owned,
/// can hold keys that `worker` of `peers` owns.
pub fn may_hold(writer: usize, writers: usize, worker: usize, peers: usize) -> bool {
    let g = gcd(writers, peers);
    writer % g == worker % g
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `may_hold` is exact: it holds precisely when some hash is owned by both workers.
    #[test]
    fn a_run_may_hold_a_workers_keys_exactly_when_some_hash_is_owned_by_both() {
        for writers in 1..=6 {
            for peers in 1..=6 {
                for writer in 0..writers {
                    for worker in 0..peers {
                        let shared = (0..(writers * peers) as u64)
                            .any(|h| owner(h, writers) == writer && owner(h, peers) == worker);
                        assert_eq!(
                            may_hold(writer, writers, worker, peers),
                            shared,
                            "{writer}/{writers} → {worker}/{peers}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn ownership_agrees_with_timelys_exchange_for_powers_of_two() {
        for hash in [0u64, 1, 5, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            for peers in [1usize, 2, 4, 8] {
                assert_eq!(owner(hash, peers), (hash & (peers as u64 - 1)) as usize);
            }
        }
    }
}
