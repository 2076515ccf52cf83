//! The raw names of a zip's central directory. The `zip` crate keeps only the last of two
//! entries with the same name, so duplicates (which different tools resolve differently) are
//! only visible here.

use std::io::{self, Read, Seek, SeekFrom};

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
/// The central directory of a wheel is read into memory; beyond this, refuse.
const MAX_CENTRAL_DIRECTORY: u64 = 256 << 20;

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Every entry name in central-directory order, as raw bytes.
pub fn entry_names<R: Read + Seek>(mut r: R) -> io::Result<Vec<Vec<u8>>> {
    let (offset, size) = central_directory(&mut r)?;
    if size > MAX_CENTRAL_DIRECTORY {
        return Err(invalid("central directory is too large"));
    }
    r.seek(SeekFrom::Start(offset))?;
    let mut dir = vec![0u8; size as usize];
    r.read_exact(&mut dir)?;
    let mut names = Vec::new();
    let mut at = 0usize;
    while at + CENTRAL_LEN <= dir.len() && u32_at(&dir, at) == u64::from(CENTRAL_SIG) {
        let name_len = u16_at(&dir, at + 28) as usize;
        let extra_len = u16_at(&dir, at + 30) as usize;
        let comment_len = u16_at(&dir, at + 32) as usize;
        let name_start = at + CENTRAL_LEN;
        let next = name_start + name_len + extra_len + comment_len;
        if next > dir.len() {
            return Err(invalid("central directory entry runs past its end"));
        }
        names.push(dir[name_start..name_start + name_len].to_vec());
        at = next;
    }
    Ok(names)
}

/// Offset and size of the central directory, from the (zip64) end record.
fn central_directory<R: Read + Seek>(r: &mut R) -> io::Result<(u64, u64)> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail_len = len.min(EOCD_LEN as u64 + u64::from(u16::MAX));
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    let eocd = (0..=tail.len().saturating_sub(EOCD_LEN))
        .rev()
        .find(|&i| tail.len() >= EOCD_LEN && u32_at(&tail, i) == u64::from(EOCD_SIG))
        .ok_or_else(|| invalid("no end of central directory record"))?;
    let size = u32_at(&tail, eocd + 12);
    let offset = u32_at(&tail, eocd + 16);
    if size != u64::from(u32::MAX) && offset != u64::from(u32::MAX) {
        return Ok((offset, size));
    }
    zip64_central_directory(r, len - tail_len + eocd as u64)
}

fn zip64_central_directory<R: Read + Seek>(r: &mut R, eocd_pos: u64) -> io::Result<(u64, u64)> {
    let locator_pos = eocd_pos
        .checked_sub(20)
        .ok_or_else(|| invalid("no zip64 locator"))?;
    r.seek(SeekFrom::Start(locator_pos))?;
    let mut locator = [0u8; 20];
    r.read_exact(&mut locator)?;
    if u32_at(&locator, 0) != u64::from(ZIP64_LOCATOR_SIG) {
        return Err(invalid("no zip64 locator"));
    }
    r.seek(SeekFrom::Start(u64_at(&locator, 8)))?;
    let mut record = [0u8; 56];
    r.read_exact(&mut record)?;
    if u32_at(&record, 0) != u64::from(ZIP64_EOCD_SIG) {
        return Err(invalid("no zip64 end of central directory record"));
    }
    Ok((u64_at(&record, 48), u64_at(&record, 40)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    #[test]
    fn lists_names_in_order() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for name in ["b/x.py", "a.py", "dir/"] {
            zip.start_file(name, options).unwrap();
            zip.write_all(b"x").unwrap();
        }
        zip.set_comment("a comment");
        let bytes = zip.finish().unwrap().into_inner();
        let names = entry_names(Cursor::new(bytes)).unwrap();
        assert_eq!(
            names,
            [b"b/x.py".to_vec(), b"a.py".to_vec(), b"dir/".to_vec()]
        );
        assert!(entry_names(Cursor::new(b"not a zip".to_vec())).is_err());
    }
}
