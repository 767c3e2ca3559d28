//! Full download: the collection file, streamed out through zstd.
//!
//! The caller holds the user's lock for as long as the stream runs: nothing
//! of this user writes meanwhile, so the checkpointed main file is a
//! consistent copy without spending an extra copy's worth of SD-card writes.

use std::fs::File;
use std::io::{self, BufReader, Read};

use std::path::Path;

use super::StoreError;
use crate::account::AccountState;

/// Makes the main file complete (WAL folded in) and opens it. Blocking.
pub fn open(state: &mut AccountState, account_dir: &Path) -> Result<(File, u64), StoreError> {
    state.abort_session();
    let conn = state.collection(account_dir)?;
    super::checkpoint(conn)?;
    let file = File::open(account_dir.join(super::FILE_NAME))?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Reads a file as a zstd stream, keeping `hold` (the user's lock) alive
/// until the reader is dropped.
pub struct Compressed<H> {
    encoder: zstd::stream::read::Encoder<'static, BufReader<File>>,
    _hold: H,
}

impl<H> Compressed<H> {
    pub fn new(file: File, hold: H) -> io::Result<Compressed<H>> {
        // Level 1: the Pi's CPU, not the LAN, is the bottleneck; a collection
        // still shrinks several times over.
        let encoder = zstd::stream::read::Encoder::new(file, 1)?;
        Ok(Compressed {
            encoder,
            _hold: hold,
        })
    }
}

impl<H> Read for Compressed<H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // `Read` promises Ok(0) for an empty buffer, and `Unblock`'s pipe asks
        // with one whenever it is full; zstd's reader would spin forever.
        if buf.is_empty() {
            return Ok(0);
        }
        self.encoder.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn an_empty_buffer_reads_nothing_and_the_stream_goes_on() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![42u8; 100_000]).unwrap();
        file.seek(io::SeekFrom::Start(0)).unwrap();
        let mut reader = Compressed::new(file, ()).unwrap();
        assert_eq!(reader.read(&mut []).unwrap(), 0);
        let mut compressed = Vec::new();
        reader.read_to_end(&mut compressed).unwrap();
        assert_eq!(
            zstd::decode_all(compressed.as_slice()).unwrap(),
            vec![42u8; 100_000]
        );
    }
}
