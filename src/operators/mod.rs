//! Operators: reusable dataflow building blocks, as extension traits on timely streams, generic
//! over their data. They know nothing of sources, sinks or the domain (see [`crate::domain`]).

pub mod aggregate;
pub mod aside;
pub mod decode;
pub mod delivery;
pub mod enrich;
pub mod in_flight;
pub mod key;
pub mod pattern;
pub mod recent;
pub mod route;
pub mod slots;
pub mod watermark;
pub mod window;

use std::collections::BTreeMap;

use timely::dataflow::operators::Capability;

/// Data held back by the time it is due at, each time with a capability there, and handed out a
/// whole time at a time, in time order, once that time is done: how operators that act only
/// behind a frontier (view stores, recent lists, enrichments) keep their input meanwhile.
pub struct Stash<D> {
    by_time: BTreeMap<u64, (Capability<u64>, Vec<D>)>,
}

impl<D> Default for Stash<D> {
    fn default() -> Self {
        Stash {
            by_time: BTreeMap::new(),
        }
    }
}

impl<D> Stash<D> {
    /// Holds `datum` until `time`; `hold` makes the capability at `time` if it has none yet.
    pub fn push(&mut self, time: u64, datum: D, hold: impl FnOnce() -> Capability<u64>) {
        self.by_time
            .entry(time)
            .or_insert_with(|| (hold(), Vec::new()))
            .1
            .push(datum);
    }

    /// The earliest time held, if `done` says it is complete: with its capability and data.
    pub fn pop_done(
        &mut self,
        done: impl Fn(u64) -> bool,
    ) -> Option<(u64, Capability<u64>, Vec<D>)> {
        let entry = self.by_time.first_entry()?;
        if !done(*entry.key()) {
            return None;
        }
        let (time, (cap, data)) = entry.remove_entry();
        Some((time, cap, data))
    }

    /// The earliest time held.
    pub fn first_time(&self) -> Option<u64> {
        self.by_time.keys().next().copied()
    }
}

/// A hint to the CPU to load every cache line `value` spans (a value that is not aligned to a
/// line, such as a state of three cells, may span two); it never faults and changes nothing.
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (value as *const T).cast::<i8>();
        for offset in line_offsets(start as usize, size_of_val(value)) {
            // SAFETY: SSE is part of every x86_64 target, and a prefetch is only a hint: it
            // reads nothing and never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Offsets from `start` that fall on each cache line the `size` bytes from `start` span, one per
/// line (a value of no bytes still names the line it starts on).
#[cfg(any(target_arch = "x86_64", test))]
fn line_offsets(start: usize, size: usize) -> impl Iterator<Item = usize> {
    const CACHE_LINE: usize = 64;
    let lines = (start % CACHE_LINE + size.max(1)).div_ceil(CACHE_LINE);
    (0..lines).map(|line| line * CACHE_LINE)
}

#[cfg(test)]
mod tests {
    use super::line_offsets;

    /// A value is prefetched line by line from its start: one line when it lies within one, two
    /// when it crosses a boundary (a 48-byte state at byte 48 of a line).
    #[test]
    fn a_prefetch_covers_every_line_a_value_spans() {
        let offsets = |start, size| line_offsets(start, size).collect::<Vec<_>>();
        assert_eq!(offsets(0, 48), [0]);
        assert_eq!(offsets(16, 48), [0]);
        assert_eq!(offsets(48, 48), [0, 64]);
        assert_eq!(offsets(64, 64), [0]);
        assert_eq!(offsets(65, 64), [0, 64]);
        assert_eq!(offsets(100, 0), [0]);
        assert_eq!(offsets(1, 200), [0, 64, 128, 192]);
    }
}
