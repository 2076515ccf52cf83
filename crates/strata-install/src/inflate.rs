//! An entry's bytes inflated whole, for the entries a build keeps in memory anyway.
//!
//! libdeflate inflates a whole buffer about a third faster than a streaming inflate
//! (zlib-rs through the zip crate) on data-science wheels, and a wheel's entries are inflated
//! on every cold build. The output buffer has the size the zip declares for the entry: an
//! entry that would inflate past it (a zip bomb lying about its size) is stopped by
//! libdeflate, one that falls short or whose CRC-32 differs is corrupt.

use std::io::{self, Read, Seek};

use libdeflater::{DecompressionError, Decompressor};
use zip::{CompressionMethod, ZipArchive};

/// The inflated bytes of entry `index`, or `None` for a compression method other than
/// stored or deflate (the caller streams those through the zip crate).
pub fn inflate_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    index: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut file = archive.by_index_raw(index).map_err(io::Error::other)?;
    let method = file.compression();
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) {
        return Ok(None);
    }
    let declared = usize::try_from(file.size()).map_err(|_| too_large())?;
    let expected_crc = file.crc32();
    // The raw bytes are within the wheel file, whose size is capped.
    let mut raw = Vec::with_capacity(usize::try_from(file.compressed_size()).unwrap_or(0));
    file.read_to_end(&mut raw)?;
    let content = match method {
        CompressionMethod::Deflated => inflate(&raw, declared)?,
        _ => raw,
    };
    if content.len() != declared {
        return Err(invalid(format!(
            "holds {} bytes, its zip header declares {declared}",
            content.len()
        )));
    }
    if crc32fast::hash(&content) != expected_crc {
        return Err(invalid("CRC-32 mismatch".to_string()));
    }
    Ok(Some(content))
}

fn inflate(raw: &[u8], declared: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; declared];
    let mut decompressor = Decompressor::new();
    match decompressor.deflate_decompress(raw, &mut out) {
        Ok(n) => {
            out.truncate(n);
            Ok(out)
        }
        Err(DecompressionError::InsufficientSpace) => Err(invalid(format!(
            "inflates past its declared size of {declared} bytes (a zip bomb?)"
        ))),
        Err(DecompressionError::BadData) => Err(invalid("invalid deflate data".to_string())),
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

fn too_large() -> io::Error {
    invalid("declares a size this machine cannot address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    fn zip_of(method: CompressionMethod, data: &[u8]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        zip.start_file("pkg/data.bin", options).unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap().into_inner()
    }

    fn data() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn gives_the_bytes_the_zip_crate_gives() {
        for method in [CompressionMethod::Deflated, CompressionMethod::Stored] {
            let bytes = zip_of(method, &data());
            let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
            let whole = inflate_entry(&mut archive, 0).unwrap().unwrap();
            let mut streamed = Vec::new();
            archive
                .by_index(0)
                .unwrap()
                .read_to_end(&mut streamed)
                .unwrap();
            assert_eq!(whole, streamed, "{method:?}");
            assert_eq!(whole, data());
        }
    }

    /// Offset of the entry's uncompressed size in the central directory record (the one the
    /// zip crate reads): signature + 20 bytes of fields before it.
    fn central_size_offset(bytes: &[u8]) -> usize {
        let at = bytes
            .windows(4)
            .rposition(|w| w == b"PK\x01\x02")
            .expect("a central directory record");
        at + 24
    }

    #[test]
    fn an_entry_inflating_past_its_declared_size_is_stopped() {
        let mut bytes = zip_of(CompressionMethod::Deflated, &data());
        let at = central_size_offset(&bytes);
        bytes[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).unwrap_err();
        assert!(err.to_string().contains("zip bomb"), "{err}");
    }

    #[test]
    fn an_entry_shorter_than_declared_or_with_a_wrong_crc_is_corrupt() {
        let mut bytes = zip_of(CompressionMethod::Deflated, &data());
        let at = central_size_offset(&bytes);
        let size = data().len() as u32 + 10;
        bytes[at..at + 4].copy_from_slice(&size.to_le_bytes());
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).unwrap_err();
        assert!(err.to_string().contains("declares"), "{err}");

        let mut bytes = zip_of(CompressionMethod::Stored, &data());
        // A stored entry's bytes, changed: only the CRC can tell.
        let header = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
        let name_len = u16::from_le_bytes([bytes[header + 26], bytes[header + 27]]) as usize;
        let extra_len = u16::from_le_bytes([bytes[header + 28], bytes[header + 29]]) as usize;
        let start = header + 30 + name_len + extra_len;
        bytes[start + 100] ^= 1;
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).unwrap_err();
        assert!(err.to_string().contains("CRC"), "{err}");
    }
}
