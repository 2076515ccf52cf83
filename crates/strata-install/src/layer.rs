//! Deterministic OCI layers: a set of entries keyed by relative path, written as a sorted tar
//! (fixed mtime, uid/gid 0, no names, normalised modes) through gzip or zstd with pinned
//! settings. The same entries always give the same `diff_id` and, for one compressor version,
//! the same compressed digest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use strata_oci::{HashingWriter, LayerDescriptor};
use strata_oci::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD};
use tar::{EntryType, Header};

/// Bumped whenever the bytes a layer is made of change for the same input (tar layout,
/// compressor, its settings or version, installer output). 2: deflate by zlib-rs instead of
/// miniz_oxide. 3: a gzip package layer carries its wheel's DEFLATE streams as members.
pub const LAYER_FORMAT_VERSION: u32 = 3;

/// The gzip compressor of layers: level, flate2 backend and its version (pinned exactly in
/// the workspace), and wheel entries' own DEFLATE streams carried as gzip members (see
/// `Members`). Compressed bytes depend on all of it, so caches of compressed digests are
/// keyed on this too.
pub const COMPRESSION: &str = "gzip-6-zlib-rs-0.6.8+wheel-deflate";

/// The zstd compressor of layers: level, content checksum, libzstd version (pinned through
/// the `zstd` crate; checked by a test).
pub const COMPRESSION_ZSTD: &str = "zstd-3-checksum-libzstd-1.6.0";

/// The zstd level of package layers: zstd's own default, faster than gzip-6 and smaller.
pub const ZSTD_LEVEL: i32 = 3;

/// How a layer's tar is compressed. Gzip is what every runtime reads; zstd is faster and
/// smaller but not read by older tools (umoci 0.4.7 among them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
}

impl LayerCompression {
    /// The layer media type it gives.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            LayerCompression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }

    /// The compressor with its settings and version, for cache keys.
    pub fn id(self) -> &'static str {
        match self {
            LayerCompression::Gzip => COMPRESSION,
            LayerCompression::Zstd => COMPRESSION_ZSTD,
        }
    }

    /// The compression of a layer media type, if strata reads it.
    pub fn of_media_type(media_type: &str) -> Option<LayerCompression> {
        match media_type {
            MEDIA_TYPE_LAYER_GZIP => Some(LayerCompression::Gzip),
            MEDIA_TYPE_LAYER_ZSTD => Some(LayerCompression::Zstd),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        }
    }

    fn codec(self) -> Codec {
        match self {
            LayerCompression::Gzip => Codec::Gzip(GZIP_LEVEL),
            LayerCompression::Zstd => Codec::Zstd(ZSTD_LEVEL),
        }
    }
}

impl fmt::Display for LayerCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown layer compression {0:?} (expected gzip or zstd)")]
pub struct UnknownCompression(pub String);

impl FromStr for LayerCompression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

/// A compressor and its level.
#[derive(Debug, Clone, Copy)]
enum Codec {
    Gzip(u32),
    Zstd(i32),
}

/// The compressing stage of the layer pipeline.
enum Encoder<W: Write> {
    Gzip(Members<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Single-threaded and with fixed headers (no name, mtime 0, OS unknown for gzip; a
    /// content checksum for zstd), so the bytes depend only on the input and the compressor.
    fn new(codec: Codec, out: W) -> io::Result<Self> {
        Ok(match codec {
            Codec::Gzip(level) => Encoder::Gzip(Members::new(out, level.min(9))),
            Codec::Zstd(level) => {
                let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                encoder.include_checksum(true)?;
                Encoder::Zstd(encoder)
            }
        })
    }

    /// The gzip stage, which can carry a DEFLATE stream as it is.
    fn members(&mut self) -> Option<&mut Members<W>> {
        match self {
            Encoder::Gzip(members) => Some(members),
            Encoder::Zstd(_) => None,
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// gzip as a series of members (RFC 1952: a gzip file is any number of them, and the
/// readers of layers - Go's, zlib's, Python's, strata's - read them all, as eStargz layers
/// need). What the layer writes is deflated into a member, and a wheel entry's own DEFLATE
/// stream is carried as a member of its own instead of being inflated and deflated again:
/// most of a package layer is then the wheel's compressed bytes, and a layer without
/// carried streams is one member, the bytes of a single gzip stream.
struct Members<W: Write> {
    level: u32,
    /// The member being written to, if one is open.
    open: Option<GzEncoder<W>>,
    /// The output while no member is open.
    out: Option<W>,
    /// Whether any member was written (an empty layer is still one empty member).
    written: bool,
}

/// The header of a carried member: deflate, no flags, mtime 0, no extra flags, OS unknown.
const GZIP_MEMBER_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, GZIP_OS_UNKNOWN];

impl<W: Write> Members<W> {
    fn new(out: W, level: u32) -> Self {
        Members {
            level,
            open: None,
            out: Some(out),
            written: false,
        }
    }

    fn member(&mut self) -> io::Result<&mut GzEncoder<W>> {
        if self.open.is_none() {
            let out = self.out.take().ok_or_else(lost)?;
            self.open = Some(
                GzBuilder::new()
                    .mtime(0)
                    .operating_system(GZIP_OS_UNKNOWN)
                    .write(out, Compression::new(self.level)),
            );
            self.written = true;
        }
        self.open.as_mut().ok_or_else(lost)
    }

    fn close_member(&mut self) -> io::Result<&mut W> {
        if let Some(member) = self.open.take() {
            self.out = Some(member.finish()?);
        }
        self.out.as_mut().ok_or_else(lost)
    }

    /// Writes `stream`, which inflates to `size` bytes with CRC-32 `crc32`, as a member.
    fn carry(&mut self, stream: &[u8], crc32: u32, size: u64) -> io::Result<()> {
        let out = self.close_member()?;
        out.write_all(&GZIP_MEMBER_HEADER)?;
        out.write_all(stream)?;
        out.write_all(&crc32.to_le_bytes())?;
        // ISIZE: the size modulo 2^32, as RFC 1952 says.
        out.write_all(&(size as u32).to_le_bytes())?;
        self.written = true;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.written {
            self.member()?;
        }
        self.close_member()?;
        self.out.take().ok_or_else(lost)
    }
}

impl<W: Write> Write for Members<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.member()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.open {
            Some(member) => member.flush(),
            None => self.out.as_mut().ok_or_else(lost)?.flush(),
        }
    }
}

/// The output of [`Members`] went missing: only after an earlier error.
fn lost() -> io::Error {
    io::Error::other("the gzip stream failed earlier")
}

/// A reader of a layer blob of `media_type`: the uncompressed tar. An unknown media type is
/// an `InvalidData` error (the caller names the layer).
pub fn decompress<'a, R: io::BufRead + 'a>(
    media_type: &str,
    compressed: R,
) -> io::Result<Box<dyn Read + 'a>> {
    match LayerCompression::of_media_type(media_type) {
        Some(LayerCompression::Gzip) => {
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(compressed)))
        }
        Some(LayerCompression::Zstd) => Ok(Box::new(zstd::stream::read::Decoder::with_buffer(
            compressed,
        )?)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("layer media type {media_type:?} is not a gzip or zstd tar"),
        )),
    }
}

/// The gzip level of package layers (see [`LayerBuilder::write_with_level`] for others).
pub const GZIP_LEVEL: u32 = 6;
/// gzip OS byte "unknown", whatever machine writes the layer.
const GZIP_OS_UNKNOWN: u8 = 255;
const MODE_DIR: u32 = 0o755;
const MODE_FILE: u32 = 0o644;
const MODE_EXEC: u32 = 0o755;
const MODE_SYMLINK: u32 = 0o777;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer path {path:?} is added twice")]
    Duplicate { path: String },
    #[error("layer path {path:?} is needed as a directory but is already a file or symlink")]
    NotADirectory { path: String },
    #[error("content of layer entry {path:?} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing layer entry {path:?}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("finishing the layer stream")]
    Finish(#[source] io::Error),
}

/// Where a file's bytes come from.
pub enum FileContent {
    Bytes(Vec<u8>),
    /// Opened from the [`ContentSource`] at write time with this key, so large contents are
    /// never held in memory. The size goes in the tar header before the bytes.
    Streamed {
        key: usize,
        size: u64,
    },
}

impl FileContent {
    fn size(&self) -> u64 {
        match self {
            FileContent::Bytes(bytes) => bytes.len() as u64,
            FileContent::Streamed { size, .. } => *size,
        }
    }
}

/// Supplies streamed file contents at write time. A reader may fail at end of stream (for
/// example when the bytes do not match an expected hash); the whole write fails then.
pub trait ContentSource {
    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>>;

    /// The content of `key` with a DEFLATE stream that inflates to it exactly, if the source
    /// has one (a wheel's entry): a gzip layer carries that stream as it is. Which entries
    /// have one must depend only on the entries, never on memory or timing: it decides the
    /// layer's bytes.
    fn deflated(&mut self, _key: usize) -> io::Result<Option<Deflated<'_>>> {
        Ok(None)
    }
}

/// A file's content and its DEFLATE stream, checked by the source to inflate to it (with
/// nothing after the stream's last block) and to have this CRC-32.
pub struct Deflated<'a> {
    pub content: Cow<'a, [u8]>,
    pub stream: Cow<'a, [u8]>,
    pub crc32: u32,
}

/// A source for layers without streamed entries.
pub struct NoSource;

impl ContentSource for NoSource {
    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        Err(io::Error::other(format!("no content source for key {key}")))
    }
}

enum Entry {
    Dir,
    File {
        executable: bool,
        content: FileContent,
    },
    Symlink {
        target: String,
    },
}

/// The entries of one layer. Paths are relative (`opt/venv/...`), `/`-separated.
#[derive(Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// Number of entries (directories included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a directory (and its parents); adding an existing directory again is fine.
    pub fn dir(&mut self, path: &str) -> Result<(), LayerError> {
        validate_path(path)?;
        self.parents(path)?;
        match self.entries.get(path) {
            None => {
                self.entries.insert(path.to_string(), Entry::Dir);
                Ok(())
            }
            Some(Entry::Dir) => Ok(()),
            Some(_) => Err(LayerError::NotADirectory {
                path: path.to_string(),
            }),
        }
    }

    pub fn file(
        &mut self,
        path: &str,
        executable: bool,
        content: FileContent,
    ) -> Result<(), LayerError> {
        self.insert_leaf(
            path,
            Entry::File {
                executable,
                content,
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), LayerError> {
        if target.is_empty() || target.contains('\0') {
            return Err(LayerError::InvalidPath {
                path: path.to_string(),
                reason: "symlink target is empty or contains NUL",
            });
        }
        self.insert_leaf(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    fn insert_leaf(&mut self, path: &str, entry: Entry) -> Result<(), LayerError> {
        validate_path(path)?;
        self.parents(path)?;
        if self.entries.contains_key(path) {
            return Err(LayerError::Duplicate {
                path: path.to_string(),
            });
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    fn parents(&mut self, path: &str) -> Result<(), LayerError> {
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_string(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => {
                    return Err(LayerError::NotADirectory {
                        path: parent.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Writes the layer to `out`: tar -> diff_id hash -> gzip -> digest hash -> out.
    /// BTreeMap order is byte order, so every parent precedes its children.
    pub fn write(
        self,
        source: &mut dyn ContentSource,
        out: impl Write,
    ) -> Result<LayerDescriptor, LayerError> {
        self.write_compressed(source, out, LayerCompression::Gzip)
    }

    /// [`LayerBuilder::write`] with `compression` at its package-layer level.
    pub fn write_compressed(
        self,
        source: &mut dyn ContentSource,
        out: impl Write,
        compression: LayerCompression,
    ) -> Result<LayerDescriptor, LayerError> {
        self.write_codec(source, out, compression.codec())
    }

    /// [`LayerBuilder::write`] at another gzip level (0-9). The compressed digest depends on
    /// the level: a cache of compressed digests must be keyed on it (the `diff_id` is not).
    pub fn write_with_level(
        self,
        source: &mut dyn ContentSource,
        out: impl Write,
        level: u32,
    ) -> Result<LayerDescriptor, LayerError> {
        self.write_codec(source, out, Codec::Gzip(level))
    }

    fn write_codec(
        self,
        source: &mut dyn ContentSource,
        out: impl Write,
        codec: Codec,
    ) -> Result<LayerDescriptor, LayerError> {
        let media_type = match codec {
            Codec::Gzip(_) => MEDIA_TYPE_LAYER_GZIP,
            Codec::Zstd(_) => MEDIA_TYPE_LAYER_ZSTD,
        };
        let compressed = HashingWriter::new(out);
        let encoder = Encoder::new(codec, compressed).map_err(LayerError::Finish)?;
        let mut tar = tar::Builder::new(HashingWriter::new(encoder));
        for (path, entry) in self.entries {
            append(&mut tar, &path, entry, source)?;
        }
        let uncompressed = tar.into_inner().map_err(LayerError::Finish)?;
        let (diff_id, _, encoder) = uncompressed.finish();
        let compressed = encoder.finish().map_err(LayerError::Finish)?;
        let (digest, size, mut out) = compressed.finish();
        out.flush().map_err(LayerError::Finish)?;
        Ok(LayerDescriptor {
            digest,
            diff_id,
            size,
            media_type: media_type.to_string(),
        })
    }
}

fn validate_path(path: &str) -> Result<(), LayerError> {
    let invalid = |reason| LayerError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        return Err(invalid(
            "must be relative, without a leading or trailing '/'",
        ));
    }
    if path.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(invalid("empty, '.' or '..' component"));
        }
        // OCI whiteouts delete files of lower layers: never let content create one.
        if component.starts_with(".wh.") {
            return Err(invalid("'.wh.' names are OCI whiteouts"));
        }
    }
    Ok(())
}

fn base_header(entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// The tar stream of a layer: hashed for its diff_id, then compressed.
type TarOut<W> = HashingWriter<Encoder<W>>;

fn append<W: Write>(
    tar: &mut tar::Builder<TarOut<W>>,
    path: &str,
    entry: Entry,
    source: &mut dyn ContentSource,
) -> Result<(), LayerError> {
    let wrap = |source| LayerError::Entry {
        path: path.to_string(),
        source,
    };
    match entry {
        Entry::Dir => {
            let mut header = base_header(EntryType::Directory, MODE_DIR, 0);
            tar.append_data(&mut header, path, io::empty())
                .map_err(wrap)
        }
        Entry::Symlink { target } => {
            let mut header = base_header(EntryType::Symlink, MODE_SYMLINK, 0);
            tar.append_link(&mut header, path, &target).map_err(wrap)
        }
        Entry::File {
            executable,
            content,
        } => {
            let mode = if executable { MODE_EXEC } else { MODE_FILE };
            let size = content.size();
            let mut header = base_header(EntryType::Regular, mode, size);
            let result = match content {
                FileContent::Bytes(bytes) => tar.append_data(&mut header, path, bytes.as_slice()),
                FileContent::Streamed { key, .. } => {
                    let gzip = tar.get_mut().get_mut().members().is_some();
                    let carried = match gzip {
                        true => source.deflated(key).map_err(wrap)?,
                        false => None,
                    };
                    match carried {
                        Some(carried) => append_carried(tar, &mut header, path, carried),
                        None => {
                            let reader = source.open(key).map_err(wrap)?;
                            let exact = ExactReader::new(reader, size);
                            tar.append_data(&mut header, path, exact)
                        }
                    }
                }
            };
            result.map_err(|e| size_error(path, e).unwrap_or_else(wrap))
        }
    }
}

/// Appends a file whose content is carried as its DEFLATE stream: the tar bytes are the
/// ones [`tar::Builder::append_data`] writes (header blocks, content, padding to 512), all
/// hashed for the diff_id; the header and padding are deflated with the rest of the layer,
/// the content is the stream's own gzip member.
fn append_carried<W: Write>(
    tar: &mut tar::Builder<TarOut<W>>,
    header: &mut Header,
    path: &str,
    carried: Deflated<'_>,
) -> io::Result<()> {
    let size = carried.content.len() as u64;
    if size != header.size()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            SizeMismatch {
                expected: header.size()?,
                actual: size,
            },
        ));
    }
    let head = header_blocks(header, path)?;
    let out = tar.get_mut();
    out.write_all(&head)?;
    out.hash_only(&carried.content);
    let members = out.get_mut().members().ok_or_else(lost)?;
    members.carry(&carried.stream, carried.crc32, size)?;
    let padding = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..padding as usize])
}

/// The header blocks [`tar::Builder::append_data`] writes for `path` (a GNU long-name
/// entry first when the path needs one), without content.
fn header_blocks(header: &mut Header, path: &str) -> io::Result<Vec<u8>> {
    let mut blocks = tar::Builder::new(Vec::new());
    blocks.append_data(header, path, io::empty())?;
    let written = blocks.get_ref().len();
    // into_inner ends the archive (two zero blocks): cut them off.
    let mut bytes = blocks.into_inner()?;
    bytes.truncate(written);
    Ok(bytes)
}

/// Turns the [`ExactReader`] error back into a typed one.
fn size_error(path: &str, error: io::Error) -> Result<LayerError, io::Error> {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<SizeMismatch>())
    {
        Some(m) => Ok(LayerError::SizeMismatch {
            path: path.to_string(),
            expected: m.expected,
            actual: m.actual,
        }),
        None => Err(error),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("content is {actual} bytes, expected {expected}")]
struct SizeMismatch {
    expected: u64,
    actual: u64,
}

/// Yields exactly `expected` bytes or fails: the tar header already promised that size, and
/// a short or long body would corrupt every entry after it.
struct ExactReader<R> {
    inner: R,
    expected: u64,
    read: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, expected: u64) -> Self {
        ExactReader {
            inner,
            expected,
            read: 0,
        }
    }

    fn mismatch(&self, actual: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            SizeMismatch {
                expected: self.expected,
                actual,
            },
        )
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.expected {
            return Err(self.mismatch(self.read));
        }
        if n == 0 && !buf.is_empty() && self.read < self.expected {
            return Err(self.mismatch(self.read));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LayerBuilder {
        let mut layer = LayerBuilder::new();
        layer
            .file("opt/venv/b.txt", false, FileContent::Bytes(b"b".to_vec()))
            .unwrap();
        layer
            .file(
                "opt/venv/bin/run",
                true,
                FileContent::Bytes(b"#!x\n".to_vec()),
            )
            .unwrap();
        layer.symlink("opt/venv/lib64", "lib").unwrap();
        layer
    }

    fn entries(gz: &[u8]) -> Vec<(String, u32, u64, u64)> {
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            out.push((
                path,
                h.mode().unwrap(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
            ));
        }
        out
    }

    #[test]
    fn writes_sorted_normalised_entries_with_parents() {
        let mut out = Vec::new();
        let desc = sample().write(&mut NoSource, &mut out).unwrap();
        assert_eq!(desc.size, out.len() as u64);
        assert_eq!(desc.digest, strata_oci::Digest::of(&out));
        let paths: Vec<_> = entries(&out)
            .into_iter()
            .map(|(p, mode, mtime, uid)| {
                assert_eq!((mtime, uid), (0, 0));
                format!("{p} {mode:o}")
            })
            .collect();
        assert_eq!(
            paths,
            [
                "opt 755",
                "opt/venv 755",
                "opt/venv/b.txt 644",
                "opt/venv/bin 755",
                "opt/venv/bin/run 755",
                "opt/venv/lib64 777"
            ]
        );
    }

    #[test]
    fn gzip_header_has_no_name_and_fixed_mtime_and_os() {
        let mut out = Vec::new();
        sample().write(&mut NoSource, &mut out).unwrap();
        // magic, CM=8, FLG=0 (no name), MTIME=0, XFL, OS=255
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }

    /// Pins the compressed bytes: if this fails, the flate2 backend, its version or the tar
    /// layout changed. Bump LAYER_FORMAT_VERSION / COMPRESSION and update the digests.
    /// The diff_id was checked independently with `gunzip -c | sha256sum`.
    #[test]
    fn known_answer_pins_format_and_compressor() {
        let mut out = Vec::new();
        let desc = sample().write(&mut NoSource, &mut out).unwrap();
        if let Ok(dump) = std::env::var("STRATA_DUMP_LAYER") {
            std::fs::write(dump, &out).unwrap();
        }
        assert_eq!(LAYER_FORMAT_VERSION, 3);
        assert_eq!(
            desc.diff_id.to_string(),
            "sha256:7f186decabd3e6d7eb9903bd1ca9908906f37419656f5bc104ef6f3c451d28f2"
        );
        assert_eq!(
            desc.digest.to_string(),
            "sha256:b8f7787a29514962ac198960e2d59e67bceece99ef1d66057d466db167f6bd1b"
        );
    }

    /// The zstd layer of the same entries: its own media type, the same diff_id as the gzip
    /// layer (the tar is one), a content checksum, and bytes pinned like the gzip ones.
    #[test]
    fn zstd_layer_has_the_same_tar_and_pinned_bytes() {
        let mut gz = Vec::new();
        let gzip = sample().write(&mut NoSource, &mut gz).unwrap();
        let mut zst = Vec::new();
        let zstd = sample()
            .write_compressed(&mut NoSource, &mut zst, LayerCompression::Zstd)
            .unwrap();
        assert_eq!(zstd.media_type, MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(zstd.diff_id, gzip.diff_id);
        assert_eq!(zstd.digest, strata_oci::Digest::of(&zst));
        let mut tar = Vec::new();
        decompress(MEDIA_TYPE_LAYER_ZSTD, &zst[..])
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(strata_oci::Digest::of(&tar), gzip.diff_id);
        // Frame header descriptor: bit 2 is Content_Checksum_flag.
        assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_ne!(zst[4] & 0b100, 0, "zstd frame without a content checksum");
        assert_eq!(
            COMPRESSION_ZSTD,
            format!(
                "zstd-{ZSTD_LEVEL}-checksum-libzstd-{}",
                zstd::zstd_safe::version_string()
            ),
            "libzstd changed: bump LAYER_FORMAT_VERSION and COMPRESSION_ZSTD"
        );
        assert_eq!(
            zstd.digest.to_string(),
            "sha256:58c03d40b0d42b0bf58d922715de2b166074e67d376e964103b0dfc66eb322ed"
        );
    }

    #[test]
    fn a_corrupt_zstd_layer_fails_to_read() {
        let mut zst = Vec::new();
        sample()
            .write_compressed(&mut NoSource, &mut zst, LayerCompression::Zstd)
            .unwrap();
        let last = zst.len() - 1;
        zst[last] ^= 1; // in the checksum
        let mut tar = Vec::new();
        let read = decompress(MEDIA_TYPE_LAYER_ZSTD, &zst[..])
            .unwrap()
            .read_to_end(&mut tar);
        assert!(read.is_err(), "a wrong zstd checksum went unnoticed");
        assert!(decompress("application/vnd.oci.image.layer.v1.tar", &zst[..]).is_err());
    }

    #[test]
    fn compression_names_round_trip() {
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            assert_eq!(c.as_str().parse::<LayerCompression>().unwrap(), c);
            assert_eq!(LayerCompression::of_media_type(c.media_type()), Some(c));
        }
        assert!("xz".parse::<LayerCompression>().is_err());
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut layer = LayerBuilder::new();
        for bad in ["/abs", "a/../b", "a//b", "a/", "", "x/.wh.y", "./a"] {
            assert!(layer.dir(bad).is_err(), "{bad}");
        }
        layer
            .file("a/f", false, FileContent::Bytes(vec![]))
            .unwrap();
        assert!(matches!(
            layer.file("a/f", false, FileContent::Bytes(vec![])),
            Err(LayerError::Duplicate { .. })
        ));
        assert!(matches!(
            layer.dir("a/f/g"),
            Err(LayerError::NotADirectory { .. })
        ));
        layer.dir("a").unwrap();
    }

    struct Short;
    impl ContentSource for Short {
        fn open(&mut self, _key: usize) -> io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(&b"abc"[..]))
        }
    }

    #[test]
    fn streamed_content_of_the_wrong_size_fails() {
        for size in [2, 4] {
            let mut layer = LayerBuilder::new();
            layer
                .file("f", false, FileContent::Streamed { key: 0, size })
                .unwrap();
            let err = layer.write(&mut Short, io::sink()).unwrap_err();
            assert!(
                matches!(err, LayerError::SizeMismatch { expected, actual: _, .. } if expected == size),
                "{err:?}"
            );
        }
        let mut layer = LayerBuilder::new();
        layer
            .file("f", false, FileContent::Streamed { key: 0, size: 3 })
            .unwrap();
        layer.write(&mut Short, io::sink()).unwrap();
    }
}
