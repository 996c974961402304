//! The process allocator's setting: mimalloc, told to keep freed memory instead of returning it
//! to the OS. burn allocates fresh tensor buffers for every op; with mimalloc's default 10 ms
//! purge delay their pages went back to the kernel between ops and came back zero-filled, and
//! page zeroing was 14 % of a training step (`shared/perf-profile.md`). Never purging makes a
//! training step about 15 % faster for about 12 % more peak memory (docs/benchmarks.md,
//! "Allocator"); a 1 s delay did not help. The binaries install `mimalloc::MiMalloc` as their
//! `#[global_allocator]` and call [`keep_freed_memory`] first thing in `main`.

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3 header shipped with
/// libmimalloc-sys 0.1.49: between `deprecated_eager_commit_delay` = 14 and
/// `use_numa_nodes` = 16, which the crate exports).
const MI_OPTION_PURGE_DELAY: i32 = 15;

// The symbols come from the mimalloc library linked through the `mimalloc` crate.
use mimalloc as _;

unsafe extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
    fn mi_option_get(option: i32) -> std::os::raw::c_long;
}

/// Keep freed memory for reuse (see the module docs); call first thing in `main`. The
/// environment variable `MIMALLOC_PURGE_DELAY`, if set, still wins.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option setters of the linked mimalloc, called before other threads start.
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        debug_assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), -1);
    }
}
