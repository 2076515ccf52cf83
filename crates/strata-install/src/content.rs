//! The bytes of installed entries: one verifying pass over the wheel before anything is
//! written (every file against RECORD), and the streaming source the layer writer reads
//! from, which re-checks each file against the hash of the first pass.

use std::io::{self, Cursor, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::layer::ContentSource;
use crate::plan::Planned;
use crate::record::{b64, Hasher};
use crate::script::ShebangRewrite;
use crate::wheel::{Archive, Wheel};
use crate::InstallError;

/// Symlink targets are read into memory; longer ones are not paths.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// What an entry installs as: sha256 (RECORD form) and size of the installed bytes.
pub struct Hashed {
    pub sha256: String,
    pub size: u64,
    pub symlink_target: Option<String>,
}

/// Checks every entry of the wheel against RECORD (planned ones and replaced dist-info
/// files alike) and that RECORD lists nothing missing. Returns the installed hashes of
/// `planned`, in order.
pub fn verify(
    wheel: &mut Wheel,
    planned: &[Planned],
    skipped: &[usize],
) -> Result<Vec<Hashed>, InstallError> {
    let mut hashes = Vec::with_capacity(planned.len());
    for p in planned {
        hashes.push(verify_entry(
            wheel,
            p.index,
            &p.entry,
            p.symlink,
            p.rewrite.as_ref(),
        )?);
    }
    let record = format!("{}/RECORD", wheel.dist_info);
    for &index in skipped {
        let name = entry_name(wheel, index)?;
        // RECORD cannot list its own hash; its signatures are not in it either.
        if !name.starts_with(&record) {
            verify_entry(wheel, index, &name, false, None)?;
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
    Ok(hashes)
}

fn entry_name(wheel: &mut Wheel, index: usize) -> Result<String, InstallError> {
    let file = wheel.archive.by_index_raw(index);
    match file {
        Ok(file) => Ok(file.name().to_string()),
        Err(e) => Err(wheel.id.corrupt(&format!("#{index}"), e.to_string())),
    }
}

fn verify_entry(
    wheel: &mut Wheel,
    index: usize,
    entry: &str,
    symlink: bool,
    rewrite: Option<&ShebangRewrite>,
) -> Result<Hashed, InstallError> {
    let row = wheel
        .record
        .get(entry)
        .cloned()
        .ok_or_else(|| wheel.id.corrupt(entry, "not listed in RECORD"))?;
    let (algorithm, expected) = row
        .hash
        .ok_or_else(|| wheel.id.corrupt(entry, "RECORD lists it without a hash"))?;
    let (raw_hash, raw_size, hashed) = {
        let file = wheel.archive.by_index(index);
        let file = file.map_err(|e| InstallError::Corrupt {
            wheel: wheel.id.0.clone(),
            entry: entry.to_string(),
            reason: e.to_string(),
        })?;
        let declared = file.size();
        let mut raw = RawReader {
            inner: file,
            hasher: algorithm.hasher(),
            count: 0,
            declared,
        };
        let hashed = if symlink {
            read_symlink(&mut raw)
        } else {
            hash_installed(&mut raw, rewrite)
        };
        let hashed = hashed.map_err(|e| wheel.id.entry_error(entry, e))?;
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
    Ok(hashed)
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
    })
}

fn hash_installed(raw: &mut impl Read, rewrite: Option<&ShebangRewrite>) -> io::Result<Hashed> {
    let mut sink = Sha256Writer::default();
    let size = io::copy(&mut installed(raw, rewrite)?, &mut sink)?;
    Ok(Hashed {
        sha256: b64(&sink.0.finalize()),
        size,
        symlink_target: None,
    })
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
    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        let (Some(p), Some(h)) = (self.planned.get(key), self.hashes.get(key)) else {
            return Err(io::Error::other(format!("no planned entry {key}")));
        };
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

impl ContentSource for KeyRanges<'_> {
    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        // The last range starting at or before `key`.
        let i = self.starts.partition_point(|&start| start <= key);
        let (Some(start), Some(source)) = (
            i.checked_sub(1).and_then(|i| self.starts.get(i)),
            i.checked_sub(1).and_then(|i| self.sources.get_mut(i)),
        ) else {
            return Err(io::Error::other(format!("no wheel for entry key {key}")));
        };
        source.open(key - start)
    }
}
