//! The engine's allocator: mimalloc, whose per-thread free lists suit the per-event allocations
//! (records, keys) that are the engine's most frequent calls, set to keep the memory it frees.
//! It is declared here, in the library, so that every program built on it (`eddy`, the
//! benchmarks, the tests) runs on the same allocator.
//!
//! It is built without transparent huge pages (`libmimalloc-sys`'s `no_thp`): with them, every
//! 2 MiB region the allocator touches at all is faulted in, and zeroed, whole. Q2's peak RSS
//! was ~185 MiB with them and ~127 MiB without, for the same time; page faults cost more time
//! than anything else but the work itself on the machines we measure on.

/// mimalloc's number for its `purge_delay` option (`mi_option_purge_delay` in `mimalloc.h`, the
/// same in v2 and v3), which `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Has the allocator keep the pages it frees for reuse rather than hand them back to the OS.
///
/// A windowed job allocates and frees in bursts (a window's results, then the panes of the
/// next windows). By default mimalloc (v3) hands freed pages back after a second, and they come
/// back as page faults that the kernel zeroes again: in Q2 it handed back about as much as the
/// process's peak (~390 MiB, `MIMALLOC_SHOW_STATS=1`), so every page was zeroed twice. The
/// process keeps the memory of its peak instead, as a JVM keeps its heap.
pub fn keep_freed_memory() {
    // SAFETY: sets a process-wide option, which mimalloc reads whenever it would purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at [`MI_OPTION_PURGE_DELAY`] is the purge delay: it has that option's default
    /// (1000 ms in mimalloc v3's `options.c`) until it is set, and reads back as "never" after.
    #[test]
    fn the_option_number_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads a process-wide option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "mimalloc's default purge delay");
        keep_freed_memory();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, -1);
    }
}
