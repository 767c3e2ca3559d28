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
pub(crate) fn configure() {
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
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no
    // pointers from us and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// A few objects that cost more to make than to use (zstd contexts), kept
/// between requests: few, so what they hold stays small however many
/// threads there are, and dropped when the server settles.
pub(crate) struct Spares<T> {
    kept: std::sync::Mutex<Vec<T>>,
    max: usize,
}

impl<T> Spares<T> {
    pub(crate) const fn new(max: usize) -> Spares<T> {
        Spares {
            kept: std::sync::Mutex::new(Vec::new()),
            max,
        }
    }

    pub(crate) fn take(&self) -> Option<T> {
        self.lock().pop()
    }

    /// Keeps `spare` unless enough are kept already.
    pub(crate) fn give(&self, spare: T) {
        let mut kept = self.lock();
        if kept.len() < self.max {
            kept.push(spare);
        }
    }

    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        drop(dropped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lets go of the pages of code and constant data that work brought in.
///
/// Running a sync touches most of the binary's code (SQLite, zstd, the
/// HTTP stack), and those pages stay mapped, counted in the process's RSS,
/// long after: 4-5 MB of the 8 MB an idle server showed. They are clean
/// copies of files on disk, so dropping our mapping of them loses nothing:
/// they stay in the kernel's page cache, where other programs' memory
/// needs come first, and the next request maps back the ones it runs (a
/// few dozen minor faults, no disk read unless the kernel reclaimed them).
///
/// Only mappings no one can write and that hold no private copy (`Anonymous:
/// 0 kB`: a relocated, then write-protected, segment does) are touched.
pub(crate) fn release_code_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in clean_file_mappings(&smaps) {
            // SAFETY: the range is a whole mapping of an unmodified file that
            // no one can write (see `clean_file_mappings`); MADV_DONTNEED on
            // it only unmaps pages the kernel maps back from the same file
            // on the next access. It frees nothing Rust knows of.
            #[allow(unsafe_code)]
            unsafe {
                nix::libc::madvise(
                    start as *mut nix::libc::c_void,
                    end - start,
                    nix::libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// The address ranges in `smaps` (the text of `/proc/self/smaps`) that map
/// a file privately, read-only, and hold no page that differs from it.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                current = None;
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let private_read_only = perms.len() == 4
                && perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p');
            current = (private_read_only && path.starts_with('/')).then_some((start, end));
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    found.push(range);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_released() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 123 /usr/bin/leitner
Rss:                 100 kB
Anonymous:             0 kB
55d0a0100000-55d0a0500000 r-xp 00100000 08:01 123 /usr/bin/leitner
Anonymous:             0 kB
55d0a0500000-55d0a0600000 r--p 00500000 08:01 123 /usr/bin/leitner
Anonymous:            24 kB
55d0a0600000-55d0a0601000 rw-p 00600000 08:01 123 /usr/bin/leitner
Anonymous:             4 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:           132 kB
7f0000100000-7f0000108000 rw-s 00000000 08:01 9 /data/alice/collection.anki2-shm
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00028000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                (0x55d0a0000000, 0x55d0a0100000),
                (0x55d0a0100000, 0x55d0a0500000),
                (0x7f0000200000, 0x7f0000300000),
            ]
        );
    }

    #[test]
    fn our_own_mappings_are_found_and_released_safely() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!clean_file_mappings(&smaps).is_empty());
        release_code_pages();
        // Still running, code and constants intact.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
