//! An entry's bytes inflated whole, for the entries a build keeps in memory anyway.
//!
//! libdeflate inflates a whole buffer about a third faster than a streaming inflate
//! (zlib-rs through the zip crate) on data-science wheels, and a wheel's entries are inflated
//! on every cold build. The output buffer has the size the zip declares for the entry: an
//! entry that would inflate past it (a zip bomb lying about its size) is stopped by
//! libdeflate, one that falls short or whose CRC-32 differs is corrupt.
//!
//! libdeflate also says how many bytes the DEFLATE stream took: an entry whose stream fills
//! its zip data exactly can be carried into a gzip layer as it is ([`Inflated::deflate`]).

use std::io::{self, Read, Seek};
use std::os::raw::c_void;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_deflate_decompress_ex,
    libdeflate_free_decompressor, libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS,
};
use zip::{CompressionMethod, ZipArchive};

/// An entry inflated out of its zip.
pub struct Inflated {
    pub content: Vec<u8>,
    pub crc32: u32,
    /// The entry's DEFLATE stream, when the zip stores it deflated and the stream ends
    /// exactly where the entry's data does (nothing a reader of the stream alone would skip).
    pub deflate: Option<Vec<u8>>,
}

/// The inflated bytes of entry `index`, or `None` for a compression method other than
/// stored or deflate (the caller streams those through the zip crate).
pub fn inflate_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    index: usize,
) -> io::Result<Option<Inflated>> {
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
    let (content, deflate) = match method {
        CompressionMethod::Deflated => {
            let (content, used) = inflate(&raw, declared)?;
            let exact = used == raw.len();
            (content, exact.then_some(raw))
        }
        _ => (raw, None),
    };
    if content.len() != declared {
        return Err(invalid(format!(
            "holds {} bytes, its zip header declares {declared}",
            content.len()
        )));
    }
    let crc32 = crc32fast::hash(&content);
    if crc32 != expected_crc {
        return Err(invalid("CRC-32 mismatch".to_string()));
    }
    Ok(Some(Inflated {
        content,
        crc32,
        deflate,
    }))
}

/// Inflates `raw` into at most `declared` bytes: the bytes, and how many bytes of `raw` the
/// stream took (to the byte boundary after its last block).
fn inflate(raw: &[u8], declared: usize) -> io::Result<(Vec<u8>, usize)> {
    let mut out = vec![0u8; declared];
    let decompressor = Decompressor::new()?;
    let mut used = 0usize;
    let mut written = 0usize;
    // SAFETY: `raw` and `out` are live slices whose lengths are passed with their pointers;
    // libdeflate writes at most `out.len()` bytes into `out` and the two counts into the
    // two locals; the decompressor is a valid one this thread owns.
    let result = unsafe {
        libdeflate_deflate_decompress_ex(
            decompressor.0.as_ptr(),
            raw.as_ptr().cast::<c_void>(),
            raw.len(),
            out.as_mut_ptr().cast::<c_void>(),
            out.len(),
            &mut used,
            &mut written,
        )
    };
    match result {
        r if r == libdeflate_result_LIBDEFLATE_SUCCESS => {
            out.truncate(written);
            Ok((out, used))
        }
        r if r == libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Err(invalid(format!(
            "inflates past its declared size of {declared} bytes (a zip bomb?)"
        ))),
        _ => Err(invalid("invalid deflate data".to_string())),
    }
}

/// A libdeflate decompressor (a few KiB of tables), freed when dropped.
struct Decompressor(NonNull<libdeflate_decompressor>);

impl Decompressor {
    fn new() -> io::Result<Self> {
        // SAFETY: allocation with no arguments; null on failure, checked.
        let pointer = unsafe { libdeflate_alloc_decompressor() };
        NonNull::new(pointer)
            .map(Decompressor)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "libdeflate decompressor"))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
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
            assert_eq!(whole.content, streamed, "{method:?}");
            assert_eq!(whole.content, data());
            assert_eq!(
                whole.deflate.is_some(),
                method == CompressionMethod::Deflated
            );
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

    /// Where the entry's data starts (after the local header, its name and extra field).
    fn data_start(bytes: &[u8]) -> usize {
        let header = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
        let name_len = u16::from_le_bytes([bytes[header + 26], bytes[header + 27]]) as usize;
        let extra_len = u16::from_le_bytes([bytes[header + 28], bytes[header + 29]]) as usize;
        header + 30 + name_len + extra_len
    }

    #[test]
    fn an_entry_inflating_past_its_declared_size_is_stopped() {
        let mut bytes = zip_of(CompressionMethod::Deflated, &data());
        let at = central_size_offset(&bytes);
        bytes[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).err().unwrap();
        assert!(err.to_string().contains("zip bomb"), "{err}");
    }

    #[test]
    fn an_entry_shorter_than_declared_or_with_a_wrong_crc_is_corrupt() {
        let mut bytes = zip_of(CompressionMethod::Deflated, &data());
        let at = central_size_offset(&bytes);
        let size = data().len() as u32 + 10;
        bytes[at..at + 4].copy_from_slice(&size.to_le_bytes());
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).err().unwrap();
        assert!(err.to_string().contains("declares"), "{err}");

        let mut bytes = zip_of(CompressionMethod::Stored, &data());
        // A stored entry's bytes, changed: only the CRC can tell.
        let start = data_start(&bytes);
        bytes[start + 100] ^= 1;
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).err().unwrap();
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    /// Bytes after the end of an entry's DEFLATE stream (inside its zip data) are what a
    /// reader of the stream alone would skip: such a stream is not offered for carrying.
    #[test]
    fn a_stream_with_bytes_after_its_end_is_not_offered_as_it_is() {
        let plain = zip_of(CompressionMethod::Deflated, &data());
        let mut archive = ZipArchive::new(Cursor::new(plain.clone())).unwrap();
        let stream = inflate_entry(&mut archive, 0)
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();

        // The same entry with two junk bytes after its stream (sizes and offsets fixed up
        // by writing the zip again with the raw bytes).
        let mut junk = stream.clone();
        junk.extend_from_slice(b"\xde\xad");
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        zip.start_file("pkg/data.bin", options).unwrap();
        zip.write_all(&junk).unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        // Mark the entry deflated, with the CRC and size of the inflated data, in both
        // headers.
        let crc = crc32fast::hash(&data()).to_le_bytes();
        let size = (data().len() as u32).to_le_bytes();
        let local = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        for (at, method) in [(local + 8, 0), (central + 10, 0)] {
            bytes[at + method..at + method + 2].copy_from_slice(&8u16.to_le_bytes());
        }
        bytes[local + 14..local + 18].copy_from_slice(&crc);
        bytes[local + 22..local + 26].copy_from_slice(&size);
        bytes[central + 16..central + 20].copy_from_slice(&crc);
        bytes[central + 24..central + 28].copy_from_slice(&size);
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let inflated = inflate_entry(&mut archive, 0).unwrap().unwrap();
        assert_eq!(inflated.content, data());
        assert!(inflated.deflate.is_none(), "junk after the stream was kept");
    }
}
