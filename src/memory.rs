//! The allocator on a small board: little kept per thread, and memory
//! given back to the system after work, so a board that runs other services
//! gets it back even while the server stays up.
//!
//! Both matter for glibc builds only (x86_64 and Debian's arm64 package):
//! musl's allocator (the static Pi builds) keeps no per-thread arenas and
//! returns freed memory by itself.

/// Set once at start. glibc gives each thread that allocates its own arena
/// (up to 8 per core), and the blocking pool has many threads: memory freed
/// in one arena is not reused by another and stays resident. Two arenas
/// suffice for a server whose threads mostly wait on SQLite and the disk.
/// Blocks of 256 KiB and more (zstd windows, batches) are mapped and
/// unmapped, instead of glibc learning from their frees to keep them in
/// the heap.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's own tunables; called before any
    // thread of ours exists.
    #[allow(unsafe_code)]
    unsafe {
        use nix::libc::{mallopt, M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD};
        mallopt(M_ARENA_MAX, 2);
        mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        mallopt(M_TRIM_THRESHOLD, 512 * 1024);
    }
}

/// Returns the allocator's free memory to the system (see the module).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no
    // pointers from us and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
