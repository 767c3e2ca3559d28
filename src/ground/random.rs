//! Random bytes from the kernel, for salts, keys and nonces.

use std::io::{self, Read};

pub(crate) fn fill(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
