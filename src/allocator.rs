//! The engine's allocator: mimalloc, whose per-thread free lists suit the per-event allocations
//! (records, keys) that are the engine's most frequent calls, set to keep the memory it frees.
//! It is declared here, in the library, so that every program built on it (`eddy`, the
//! benchmarks, the tests) runs on the same allocator. [`bound_address_space`] keeps the
//! process's virtual memory, its own and its C libraries', within a small `ulimit -v`.
//!
//! It is built without transparent huge pages (`libmimalloc-sys`'s `no_thp`): with them, every
//! 2 MiB region the allocator touches at all is faulted in, and zeroed, whole. Q2's peak RSS
//! was ~185 MiB with them and ~127 MiB without, for the same time; page faults cost more time
//! than anything else but the work itself on the machines we measure on.

/// mimalloc's number for its `purge_delay` option (`mi_option_purge_delay` in `mimalloc.h`, the
/// same in v2 and v3), which `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's number for its `arena_reserve` option (`mi_option_arena_reserve` in v3's
/// `mimalloc.h`), which `libmimalloc-sys` does not name: the address space it reserves at a
/// time, in KiB.
const MI_OPTION_ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;

/// The address space mimalloc reserves at a time (its default is 1 GiB).
const ARENA_RESERVE_KIB: std::ffi::c_long = 64 * 1024;

/// The most malloc arenas glibc keeps for the C libraries (librdkafka, OpenSSL); its default is
/// 8 per core, each reserving 64 MiB.
const GLIBC_ARENAS: std::ffi::c_int = 2;

/// The stack of a thread a C library starts (librdkafka starts 3 or 4 per client): what Rust
/// gives its own threads, rather than glibc's default of `ulimit -s` (8 MiB).
const C_THREAD_STACK: usize = 2 << 20;

unsafe extern "C" {
    /// glibc (2.18 on): the attributes of threads created without any.
    fn pthread_setattr_default_np(attr: *const libc::pthread_attr_t) -> std::ffi::c_int;
}

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

/// Keeps the process's virtual memory small, so that `eddy demo` runs under `ulimit -v` of
/// 1 GiB (it needed 2.6 GiB for 83 MiB resident): mimalloc reserves 64 MiB at a time rather than
/// 1 GiB, glibc's malloc (the C libraries') keeps at most [`GLIBC_ARENAS`] arenas, and threads
/// started by C libraries get [`C_THREAD_STACK`] of stack. Call it before the first allocation
/// (which reserves mimalloc's first arena: `eddy` calls it from a constructor, before `main`)
/// and before any thread starts (threads started before keep glibc's defaults). Fails with
/// what the C library answered, should it refuse.
pub fn bound_address_space() -> std::io::Result<()> {
    // SAFETY: sets a process-wide option, which mimalloc reads whenever it reserves memory.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_RESERVE, ARENA_RESERVE_KIB) };
    // SAFETY: mallopt takes any parameter and value, and answers 0 for one it refuses.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, GLIBC_ARENAS) } == 0 {
        return Err(std::io::Error::other("glibc refused M_ARENA_MAX"));
    }
    // SAFETY: `attr` is initialised before it is set and read, and destroyed after; glibc
    // copies it.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        let check = |code| match code {
            0 => Ok(()),
            code => Err(std::io::Error::from_raw_os_error(code)),
        };
        check(libc::pthread_attr_init(attr.as_mut_ptr()))?;
        let set = check(libc::pthread_attr_setstacksize(
            attr.as_mut_ptr(),
            C_THREAD_STACK,
        ))
        .and_then(|()| check(pthread_setattr_default_np(attr.as_ptr())));
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        set
    }
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

    /// mimalloc's option at [`MI_OPTION_ARENA_RESERVE`] is the arena reserve: 1 GiB (in KiB)
    /// until set; and threads started without attributes get the stack set.
    #[test]
    fn the_address_space_bounds_take() {
        if std::env::var_os("MIMALLOC_ARENA_RESERVE").is_some() {
            return;
        }
        // SAFETY: reads a process-wide option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_RESERVE) };
        assert_eq!(
            before,
            1024 * 1024,
            "mimalloc's default arena reserve, in KiB"
        );
        bound_address_space().unwrap();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_RESERVE) };
        assert_eq!(after, ARENA_RESERVE_KIB);
        // SAFETY: a thread started without attributes reads its own stack size.
        let stack = unsafe {
            let mut thread = std::mem::MaybeUninit::<libc::pthread_t>::uninit();
            extern "C" fn stack_size(_: *mut libc::c_void) -> *mut libc::c_void {
                let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
                let mut size = 0usize;
                // SAFETY: reads the calling thread's attributes into `attr`, then frees them.
                unsafe {
                    libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr());
                    libc::pthread_attr_getstacksize(attr.as_ptr(), &mut size);
                    libc::pthread_attr_destroy(attr.as_mut_ptr());
                }
                size as *mut libc::c_void
            }
            let started = libc::pthread_create(
                thread.as_mut_ptr(),
                std::ptr::null(),
                stack_size,
                std::ptr::null_mut(),
            );
            assert_eq!(started, 0);
            let mut size = std::ptr::null_mut();
            libc::pthread_join(thread.assume_init(), &mut size);
            size as usize
        };
        assert_eq!(stack, C_THREAD_STACK);
    }
}
