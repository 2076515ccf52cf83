//! An entry's bytes inflated whole, for the entries a build keeps in memory anyway.
//!
//! zlib-rs inflating a whole buffer takes a sixth less CPU than its streaming inflate through
//! the zip crate (small reads and copies) on data-science wheels, and a wheel's entries are
//! inflated on every cold build. It is strict as zlib is: a stream zlib, gzip(1), Python or
//! Go would refuse (a symbol past the alphabet, an incomplete code) is refused here too, so a
//! stream carried into a layer (below) is one every reader decodes, and the kept and the
//! streamed path of an install accept the same wheels. The output buffer has the size the
//! zip declares for the entry: an entry that would inflate past it (a zip bomb lying about
//! its size) is stopped, one that falls short or whose CRC-32 differs is corrupt.
//!
//! The inflater also says how many bytes the DEFLATE stream took: an entry whose stream fills
//! its zip data exactly can be carried into a gzip layer as it is ([`Inflated::deflate`]).

use std::io::{self, Read, Seek};

use flate2::{Decompress, FlushDecompress, Status};
use zip::{CompressionMethod, ZipArchive};

/// An entry inflated out of its zip.
pub struct Inflated {
    pub content: Vec<u8>,
    pub crc32: u32,
    /// The entry's DEFLATE stream, when the zip stores it deflated and the stream ends
    /// exactly where the entry's data does (nothing a reader of the stream alone would skip).
    pub deflate: Option<Vec<u8>>,
}

/// The most compressed bytes a DEFLATE stream of `size` bytes needs (stored blocks cost 5
/// bytes per 64 KiB; this allows 0.5%): an entry whose zip claims more is not read whole,
/// so a header claiming exabytes allocates nothing.
pub fn stream_bound(size: u64) -> u64 {
    size.saturating_add(size / 200).saturating_add(64)
}

/// The inflated bytes of entry `index`, or `None` for an entry this does not read whole: a
/// compression method other than stored or deflate, or more compressed bytes than
/// [`stream_bound`] of its size (the caller streams those through the zip crate). An
/// encrypted entry is an error, as the zip crate's reader makes it.
pub fn inflate_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    index: usize,
) -> io::Result<Option<Inflated>> {
    let file = archive.by_index_raw(index).map_err(io::Error::other)?;
    if file.encrypted() {
        return Err(invalid("is encrypted".to_string()));
    }
    let method = file.compression();
    let stored_size = file.compressed_size();
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) || stored_size > stream_bound(file.size())
    {
        return Ok(None);
    }
    let declared = usize::try_from(file.size()).map_err(|_| too_large())?;
    let expected_crc = file.crc32();
    let mut raw = Vec::with_capacity(usize::try_from(stored_size).map_err(|_| too_large())?);
    file.take(stored_size).read_to_end(&mut raw)?;
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
    // One byte of room past the declared size tells a stream that goes on from one that ends.
    let mut out = vec![0u8; declared.saturating_add(1)];
    let mut inflater = Decompress::new(false);
    let status = inflater
        .decompress(raw, &mut out, FlushDecompress::Finish)
        .map_err(|e| invalid(format!("invalid deflate data: {e}")))?;
    let written = usize::try_from(inflater.total_out()).map_err(|_| too_large())?;
    let used = usize::try_from(inflater.total_in()).map_err(|_| too_large())?;
    if written > declared {
        return Err(invalid(format!(
            "inflates past its declared size of {declared} bytes (a zip bomb?)"
        )));
    }
    if status != Status::StreamEnd {
        return Err(invalid(
            "its deflate data ends before its last block".to_string(),
        ));
    }
    out.truncate(written);
    Ok((out, used))
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
        // Half its size: still more than its compressed bytes, so it is read whole.
        let half = data().len() as u32 / 2;
        bytes[at..at + 4].copy_from_slice(&half.to_le_bytes());
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

    /// A zip whose one entry holds `stream` as its deflated data, declared to inflate to
    /// `content` (written stored, then marked deflated with `content`'s CRC and size in both
    /// headers), with general purpose `flags`.
    fn zip_holding_stream(stream: &[u8], content: &[u8], flags: u16) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        zip.start_file("pkg/data.bin", options).unwrap();
        zip.write_all(stream).unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        let crc = crc32fast::hash(content).to_le_bytes();
        let size = (content.len() as u32).to_le_bytes();
        let local = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        // Local header: flags at 6, method at 8, CRC at 14, size at 22; the central one has
        // each 2 bytes later.
        for (header, shift) in [(local, 0), (central, 2)] {
            let at = header + shift;
            bytes[at + 6..at + 8].copy_from_slice(&flags.to_le_bytes());
            bytes[at + 8..at + 10].copy_from_slice(&8u16.to_le_bytes());
            bytes[at + 14..at + 18].copy_from_slice(&crc);
            bytes[at + 22..at + 26].copy_from_slice(&size);
        }
        bytes
    }

    /// Bytes after the end of an entry's DEFLATE stream (inside its zip data) are what a
    /// reader of the stream alone would skip: such a stream is not offered for carrying.
    #[test]
    fn a_stream_with_bytes_after_its_end_is_not_offered_as_it_is() {
        let plain = zip_of(CompressionMethod::Deflated, &data());
        let mut archive = ZipArchive::new(Cursor::new(plain)).unwrap();
        let mut stream = inflate_entry(&mut archive, 0)
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();
        stream.extend_from_slice(b"\xde\xad");
        let bytes = zip_holding_stream(&stream, &data(), 0);
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let inflated = inflate_entry(&mut archive, 0).unwrap().unwrap();
        assert_eq!(inflated.content, data());
        assert!(inflated.deflate.is_none(), "junk after the stream was kept");
    }

    /// A fixed-Huffman block using length symbol 286, which DEFLATE does not define: zlib,
    /// gzip(1), Python and Go refuse it (libdeflate reads it as length 258), so it must
    /// neither be carried nor installed.
    #[test]
    fn a_stream_zlib_refuses_is_refused() {
        let stream = [115u8, 28, 3, 0];
        let bytes = zip_holding_stream(&stream, &[b'A'; 259], 0);
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).err().unwrap();
        assert!(err.to_string().contains("invalid deflate data"), "{err}");
    }

    /// An entry flagged encrypted is refused, as the zip crate's reader refuses it.
    #[test]
    fn an_encrypted_entry_is_refused() {
        let plain = zip_of(CompressionMethod::Deflated, &data());
        let mut archive = ZipArchive::new(Cursor::new(plain)).unwrap();
        let stream = inflate_entry(&mut archive, 0)
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();
        let bytes = zip_holding_stream(&stream, &data(), 1);
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        let err = inflate_entry(&mut archive, 0).err().unwrap();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    /// A zip claiming more compressed bytes than any stream of the entry's size needs is not
    /// read whole (nothing is allocated for the claim).
    #[test]
    fn a_claimed_compressed_size_past_the_bound_is_not_read_whole() {
        let mut bytes = zip_of(CompressionMethod::Deflated, &data());
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        bytes[central + 20..central + 24].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert!(inflate_entry(&mut archive, 0).unwrap().is_none());
    }
}
