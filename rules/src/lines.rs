//! Line-oriented append-only files (the webhook spool here, the file store and the storage
//! spool in `tapwatch-storage`): what is whole in them.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The length of a file up to and including its last newline (0 when it has none): what a
/// torn append leaves behind is past it.
pub fn whole_length(f: &mut File) -> std::io::Result<u64> {
    let mut end = f.metadata()?.len();
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
