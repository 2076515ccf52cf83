//! The bytes of installed entries: one verifying pass over the wheel before anything is
//! written (every file against RECORD), and the source the layer writer reads from.
//!
//! The verifying pass keeps what it inflated in memory, within a budget shared by every
//! wheel being installed at once ([`MAX_KEPT_BYTES`]): the layer is then written from those
//! bytes, and each file is inflated and hashed once instead of twice (the difference between
//! writing a layer at the compression floor or 30% above it). A wheel that does not fit is
//! streamed from the zip again, and each file re-checked against the hash of the first pass.

use std::borrow::Cow;
use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::inflate::{inflate_entry, stream_bound, Inflated};
use crate::layer::{ContentSource, Deflated};
use crate::plan::Planned;
use crate::record::{b64, HashAlgorithm, Hasher};
use crate::script::ShebangRewrite;
use crate::wheel::{Archive, Wheel};
use crate::InstallError;

/// The largest entry whose DEFLATE stream a gzip layer carries as it is: a larger one is
/// deflated again, so that writing a layer never holds more than this (and its stream) of
/// an entry the memory budget did not keep.
const MAX_CARRIED: u64 = 256 << 20;

/// Whether an entry of `size` bytes is carried as its DEFLATE stream (when it has one): an
/// empty one has nothing to deflate.
fn carries(size: u64) -> bool {
    size > 0 && size <= MAX_CARRIED
}

/// Symlink targets are read into memory; longer ones are not paths.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// Installed bytes kept in memory between the verifying pass and the write, for all wheels
/// being installed at once (worker threads share it).
pub const MAX_KEPT_BYTES: u64 = 1 << 30;

static KEPT_BYTES: AtomicU64 = AtomicU64::new(0);

/// A share of [`MAX_KEPT_BYTES`], given back when dropped (when the wheel is written).
pub struct Reservation(u64);

impl Reservation {
    fn take(bytes: u64) -> Option<Reservation> {
        KEPT_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
                kept.checked_add(bytes)
                    .filter(|&total| total <= MAX_KEPT_BYTES)
            })
            .ok()
            .map(|_| Reservation(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        KEPT_BYTES.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// What an entry installs as: sha256 (RECORD form) and size of the installed bytes, and the
/// bytes themselves when the wheel fits in the memory budget.
pub struct Hashed {
    pub sha256: String,
    pub size: u64,
    pub symlink_target: Option<String>,
    content: Option<Vec<u8>>,
    /// The entry's own DEFLATE stream and the CRC-32 of `content`, kept with it when the
    /// installed bytes are the entry's (see [`crate::inflate::Inflated::deflate`]).
    deflate: Option<(Vec<u8>, u32)>,
}

/// The verified entries of a wheel, and the memory their kept bytes hold.
pub struct Verified {
    pub hashes: Vec<Hashed>,
    _kept: Option<Reservation>,
}

/// Checks every entry of the wheel against RECORD (planned ones and replaced dist-info
/// files alike) and that RECORD lists nothing missing. Returns the installed hashes of
/// `planned`, in order.
pub fn verify(
    wheel: &mut Wheel,
    planned: &[Planned],
    skipped: &[usize],
) -> Result<Verified, InstallError> {
    let kept = Reservation::take(declared_bytes(wheel, planned));
    let keep = kept.is_some();
    let mut hashes = Vec::with_capacity(planned.len());
    for p in planned {
        let entry = EntryToVerify {
            index: p.index,
            entry: &p.entry,
            symlink: p.symlink,
            rewrite: p.rewrite.as_ref(),
            keep,
        };
        hashes.push(verify_entry(wheel, &entry)?);
    }
    let record = format!("{}/RECORD", wheel.dist_info);
    for &index in skipped {
        let name = entry_name(wheel, index)?;
        // RECORD cannot list its own hash; its signatures are not in it either.
        if !name.starts_with(&record) {
            let entry = EntryToVerify {
                index,
                entry: &name,
                symlink: false,
                rewrite: None,
                keep: false,
            };
            verify_entry(wheel, &entry)?;
        }
    }
    let missing = wheel
        .record
        .iter()
        .find(|(path, row)| row.hash.is_some() && wheel.archive.index_for_name(path).is_none());
    if let Some((path, _)) = missing {
        return Err(wheel
            .id
            .corrupt(path, "listed in RECORD but missing from the wheel"));
    }
    Ok(Verified {
        hashes,
        _kept: kept,
    })
}

/// The bytes the zip declares for the planned entries, inflated and as stored (kept both
/// for a layer that carries an entry's DEFLATE stream); the caps were checked on the same
/// sizes, and an entry that inflates past its size is stopped.
fn declared_bytes(wheel: &mut Wheel, planned: &[Planned]) -> u64 {
    planned
        .iter()
        .filter_map(|p| {
            let file = wheel.archive.by_index_raw(p.index).ok()?;
            Some(file.size().saturating_add(file.compressed_size()))
        })
        .fold(0u64, u64::saturating_add)
}

struct EntryToVerify<'a> {
    index: usize,
    entry: &'a str,
    symlink: bool,
    rewrite: Option<&'a ShebangRewrite>,
    /// Keep the installed bytes in memory for the write.
    keep: bool,
}

fn entry_name(wheel: &mut Wheel, index: usize) -> Result<String, InstallError> {
    let file = wheel.archive.by_index_raw(index);
    match file {
        Ok(file) => Ok(file.name().to_string()),
        Err(e) => Err(wheel.id.corrupt(&format!("#{index}"), e.to_string())),
    }
}

fn verify_entry(wheel: &mut Wheel, e: &EntryToVerify) -> Result<Hashed, InstallError> {
    let entry = e.entry;
    let row = wheel
        .record
        .get(entry)
        .cloned()
        .ok_or_else(|| wheel.id.corrupt(entry, "not listed in RECORD"))?;
    let (algorithm, expected) = row
        .hash
        .ok_or_else(|| wheel.id.corrupt(entry, "RECORD lists it without a hash"))?;
    // Unchanged bytes hashed with sha256: the installed hash is the raw one, computed once.
    let same_hash = e.rewrite.is_none() && algorithm == HashAlgorithm::Sha256;
    let whole = match e.keep && !e.symlink && e.rewrite.is_none() {
        true => inflate_entry(&mut wheel.archive, e.index)
            .map_err(|err| wheel.id.entry_error(entry, err))?,
        false => None,
    };
    let (raw_hash, raw_size, mut hashed) = if let Some(content) = whole {
        kept_as_is(content, algorithm, same_hash)
    } else {
        let file = wheel.archive.by_index(e.index);
        let file = file.map_err(|err| InstallError::Corrupt {
            wheel: wheel.id.0.clone(),
            entry: entry.to_string(),
            reason: err.to_string(),
        })?;
        let declared = file.size();
        let mut raw = RawReader {
            inner: file,
            hasher: algorithm.hasher(),
            count: 0,
            declared,
        };
        let hashed = if e.symlink {
            read_symlink(&mut raw)
        } else {
            hash_installed(&mut raw, e.rewrite, !same_hash, e.keep.then_some(declared))
        };
        let hashed = hashed.map_err(|err| wheel.id.entry_error(entry, err))?;
        (raw.hasher.finish_b64(), raw.count, hashed)
    };
    if raw_hash != expected {
        return Err(wheel.id.corrupt(
            entry,
            format!("hash mismatch: RECORD has {expected}, the content {raw_hash}"),
        ));
    }
    if let Some(size) = row.size.filter(|s| *s != raw_size) {
        return Err(wheel.id.corrupt(
            entry,
            format!("size mismatch: RECORD has {size}, the content {raw_size}"),
        ));
    }
    if same_hash && !e.symlink {
        hashed.sha256 = raw_hash;
    }
    Ok(hashed)
}

/// The RECORD hash and size of an entry inflated whole and installed unchanged, and what it
/// installs as.
fn kept_as_is(
    inflated: Inflated,
    algorithm: HashAlgorithm,
    same_hash: bool,
) -> (String, u64, Hashed) {
    let Inflated {
        content,
        crc32,
        deflate,
    } = inflated;
    let mut hasher = algorithm.hasher();
    hasher.update(&content);
    let raw_hash = hasher.finish_b64();
    let size = content.len() as u64;
    // The installed hash is filled in from the raw one when both are sha256.
    let sha256 = match same_hash {
        true => String::new(),
        false => b64(&Sha256::digest(&content)),
    };
    let hashed = Hashed {
        sha256,
        size,
        symlink_target: None,
        content: Some(content),
        deflate: deflate
            .filter(|_| carries(size))
            .map(|stream| (stream, crc32)),
    };
    (raw_hash, size, hashed)
}

fn read_symlink(raw: &mut impl Read) -> io::Result<Hashed> {
    let mut target = Vec::new();
    raw.take(MAX_SYMLINK_TARGET + 1).read_to_end(&mut target)?;
    if target.len() as u64 > MAX_SYMLINK_TARGET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "symlink target too long",
        ));
    }
    let sha256 = b64(&Sha256::digest(&target));
    let size = target.len() as u64;
    let target = String::from_utf8(target)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "symlink target is not UTF-8"))?;
    Ok(Hashed {
        sha256,
        size,
        symlink_target: Some(target),
        content: None,
        deflate: None,
    })
}

/// Reads the installed bytes of an entry: hashed with sha256 unless `hash` is false (the
/// caller has the hash of the raw bytes, which are the same), kept if `keep` gives the
/// entry's declared size.
fn hash_installed(
    raw: &mut impl Read,
    rewrite: Option<&ShebangRewrite>,
    hash: bool,
    keep: Option<u64>,
) -> io::Result<Hashed> {
    // Sized up front: the budget reserved the declared sizes, and a vector grown by doubling
    // would hold up to twice that while it grows (a rewritten shebang may still add a few
    // bytes). The reader stops an entry that inflates past its declared size.
    let mut sink = InstalledSink {
        hasher: hash.then(Sha256::new),
        kept: keep.map(|declared| Vec::with_capacity(usize::try_from(declared).unwrap_or(0))),
    };
    let size = io::copy(&mut installed(raw, rewrite)?, &mut sink)?;
    Ok(Hashed {
        sha256: sink.hasher.map(|h| b64(&h.finalize())).unwrap_or_default(),
        size,
        symlink_target: None,
        content: sink.kept,
        deflate: None,
    })
}

struct InstalledSink {
    hasher: Option<Sha256>,
    kept: Option<Vec<u8>>,
}

impl Write for InstalledSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(h) = &mut self.hasher {
            h.update(buf);
        }
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The installed bytes of an entry: its content, with the first line replaced if rewritten.
fn installed<'r, R: Read + 'r>(
    mut raw: R,
    rewrite: Option<&ShebangRewrite>,
) -> io::Result<Box<dyn Read + 'r>> {
    let Some(rewrite) = rewrite else {
        return Ok(Box::new(raw));
    };
    io::copy(&mut raw.by_ref().take(rewrite.skip), &mut io::sink())?;
    Ok(Box::new(Cursor::new(rewrite.prefix.clone()).chain(raw)))
}

/// Hashes and counts the raw bytes of an entry as they are read, and stops an entry that
/// inflates past the size its zip headers declare: the wheel's caps are checked on the
/// declared sizes, so a zip bomb that lies about them is stopped here.
struct RawReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    declared: u64,
}

impl<R: Read> Read for RawReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "inflates past its declared size of {} bytes (a zip bomb?)",
                    self.declared
                ),
            ));
        }
        // Short of its declared size at the end: corrupt, as when it is inflated whole.
        if n == 0 && !buf.is_empty() && self.count < self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "holds {} bytes, its zip header declares {}",
                    self.count, self.declared
                ),
            ));
        }
        Ok(n)
    }
}

#[derive(Default)]
pub struct Sha256Writer(pub Sha256);

impl Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams planned entries into the layer; key = index into `planned`.
pub struct WheelSource<'a> {
    pub archive: &'a mut Archive,
    pub planned: &'a [Planned],
    pub hashes: &'a [Hashed],
}

impl ContentSource for WheelSource<'_> {
    fn deflated(&mut self, key: usize) -> io::Result<Option<Deflated<'_>>> {
        let (Some(p), Some(h)) = (self.planned.get(key), self.hashes.get(key)) else {
            return Err(io::Error::other(format!("no planned entry {key}")));
        };
        if let Some(content) = &h.content {
            return Ok(h.deflate.as_ref().map(|(stream, crc32)| Deflated {
                content: Cow::Borrowed(content),
                stream: Cow::Borrowed(stream),
                crc32: *crc32,
            }));
        }
        // Not kept: the same entries are carried as when kept (the layer must not depend on
        // the memory budget), each read into memory now, one at a time, and checked against
        // the hash of the verifying pass.
        if p.rewrite.is_some() || p.symlink {
            return Ok(None);
        }
        // Decided on the zip's headers before anything is read, as the kept path decides.
        let file = self
            .archive
            .by_index_raw(p.index)
            .map_err(io::Error::other)?;
        let whole = file.compression() == zip::CompressionMethod::Deflated
            && file.compressed_size() <= stream_bound(file.size());
        if !whole || !carries(file.size()) {
            return Ok(None);
        }
        drop(file);
        let Some(Inflated {
            content,
            crc32,
            deflate: Some(stream),
        }) = inflate_entry(self.archive, p.index)?
        else {
            return Ok(None);
        };
        if b64(&Sha256::digest(&content)) != h.sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content changed since it was verified against RECORD",
            ));
        }
        Ok(Some(Deflated {
            content: Cow::Owned(content),
            stream: Cow::Owned(stream),
            crc32,
        }))
    }

    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        let (Some(p), Some(h)) = (self.planned.get(key), self.hashes.get(key)) else {
            return Err(io::Error::other(format!("no planned entry {key}")));
        };
        if let Some(kept) = &h.content {
            // Verified in memory: nothing can change it.
            return Ok(Box::new(Cursor::new(kept.as_slice())));
        }
        let file = self.archive.by_index(p.index).map_err(io::Error::other)?;
        let reader = installed(file, p.rewrite.as_ref())?;
        Ok(Box::new(Verifying {
            inner: reader,
            hasher: Sha256::new(),
            expected: h.sha256.clone(),
        }))
    }
}

/// Fails at end of stream if the bytes differ from what the verifying pass saw (the wheel
/// file changed under us).
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if n == 0 && !buf.is_empty() {
            let actual = b64(&self.hasher.clone().finalize());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "content changed since it was verified against RECORD",
                ));
            }
        }
        Ok(n)
    }
}

/// Streams the entries of several wheels into one layer: wheel `i` owns the keys from
/// `starts[i]` up to the next start, and sees them from 0.
pub struct KeyRanges<'a> {
    starts: Vec<usize>,
    sources: Vec<WheelSource<'a>>,
}

impl<'a> KeyRanges<'a> {
    /// `starts` ascending, one per source.
    pub fn new(starts: Vec<usize>, sources: Vec<WheelSource<'a>>) -> Self {
        KeyRanges { starts, sources }
    }
}

impl<'a> KeyRanges<'a> {
    /// The wheel that owns `key`, and the key as it sees it.
    fn source(&mut self, key: usize) -> Option<(&mut WheelSource<'a>, usize)> {
        // The last range starting at or before `key`.
        let i = self
            .starts
            .partition_point(|&start| start <= key)
            .checked_sub(1)?;
        let start = *self.starts.get(i)?;
        Some((self.sources.get_mut(i)?, key - start))
    }
}

impl ContentSource for KeyRanges<'_> {
    fn deflated(&mut self, key: usize) -> io::Result<Option<Deflated<'_>>> {
        let Some((source, key)) = self.source(key) else {
            return Err(io::Error::other(format!("no wheel for entry key {key}")));
        };
        source.deflated(key)
    }

    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        let Some((source, key)) = self.source(key) else {
            return Err(io::Error::other(format!("no wheel for entry key {key}")));
        };
        source.open(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{wheel_layer, InstallScheme, LayerCompression};
    use std::path::Path;
    use strata_oci::MEDIA_TYPE_LAYER_GZIP;
    use strata_python::PythonVersion;

    /// A small valid wheel with one script whose shebang is rewritten.
    fn write_wheel(dir: &Path) -> std::path::PathBuf {
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("pkg/__init__.py", b"print('hello')\n".to_vec()),
            (
                "pkg/data.bin",
                (0..100_000u32).map(|i| (i % 251) as u8).collect(),
            ),
            (
                "pkg-1.0.data/scripts/tool",
                b"#!python\nprint(1)\n".to_vec(),
            ),
            (
                "pkg-1.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n".to_vec(),
            ),
            (
                "pkg-1.0.dist-info/WHEEL",
                b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
            ),
        ];
        let mut record = String::new();
        for (name, data) in &files {
            record.push_str(&format!(
                "{name},sha256={},{}\n",
                b64(&Sha256::digest(data)),
                data.len()
            ));
        }
        record.push_str("pkg-1.0.dist-info/RECORD,,\n");
        let path = dir.join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for (name, data) in &files {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.start_file("pkg-1.0.dist-info/RECORD", options).unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn a_wheel_streamed_twice_gives_the_layer_of_one_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path());
        let scheme = InstallScheme::new(PythonVersion::new(3, 11));
        let kept = wheel_layer(&wheel, &scheme, &mut Vec::new()).unwrap();
        // With the whole budget taken (waiting for other tests to give theirs back), the
        // wheel does not fit and is streamed from the zip again.
        let hold = loop {
            if let Some(all) = Reservation::take(MAX_KEPT_BYTES) {
                break all;
            }
            std::thread::yield_now();
        };
        let streamed = wheel_layer(&wheel, &scheme, &mut Vec::new()).unwrap();
        drop(hold);
        assert_eq!(kept.descriptor, streamed.descriptor);
        assert!(Reservation::take(MAX_KEPT_BYTES / 2).is_some());
    }

    /// A gzip package layer carries each deflated entry's own stream (found verbatim in the
    /// layer), and reads back whole, as one tar, with strata's reader and with gzip(1): the
    /// tar of the zstd layer of the same wheel, which is compressed from scratch.
    #[test]
    fn a_gzip_layer_carries_the_wheel_streams_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path());
        let scheme = InstallScheme::new(PythonVersion::new(3, 11));
        let mut gz = Vec::new();
        let gzip = wheel_layer(&wheel, &scheme, &mut gz).unwrap();
        let zstd_scheme = scheme.clone().with_compression(LayerCompression::Zstd);
        let zstd = wheel_layer(&wheel, &zstd_scheme, &mut Vec::new()).unwrap();
        assert_eq!(gzip.descriptor.diff_id, zstd.descriptor.diff_id);

        let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
        let index = archive.index_for_name("pkg/data.bin").unwrap();
        let stream = inflate_entry(&mut archive, index)
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();
        assert!(
            gz.windows(stream.len()).any(|w| w == stream.as_slice()),
            "the entry's stream is not in the layer"
        );

        let mut tar = Vec::new();
        crate::decompress(MEDIA_TYPE_LAYER_GZIP, &gz[..])
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(strata_oci::Digest::of(&tar), gzip.descriptor.diff_id);
        let layer = dir.path().join("layer.tar.gz");
        std::fs::write(&layer, &gz).unwrap();
        let gunzip = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&layer)
            .output()
            .expect("gzip(1) is installed");
        assert!(gunzip.status.success(), "gzip -dc refused the layer");
        assert_eq!(gunzip.stdout, tar, "gzip(1) reads another tar");
    }
}
