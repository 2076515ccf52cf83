//! The tree's files as one layer at the destination: sorted, fixed times, owners and modes
//! (`strata-install`'s layer writer), file bytes streamed from disk.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use strata_install::{ContentSource, FileContent, LayerBuilder};
use strata_oci::{Digest, HashingWriter, LayerDescriptor};

use crate::error::CodeError;
use crate::walk::{FileKind, TreeFile};

/// gzip level of code layers. A code layer is packed on every submit that changed the tree
/// (a package layer once per wheel), and the person waits for it: on the bench_pack tree
/// (20 MB of Python-like text) level 1 takes 104 ms of CPU for 4.7 MB, level 6 705 ms for
/// 3.7 MB. A megabyte more to store or push costs less than half a second per submit.
pub const CODE_GZIP_LEVEL: u32 = 1;

/// Reads the tree's regular files by their index in the layer; keeps the content digest of
/// the racy ones (see `cache`) as they stream by.
struct TreeSource<'a> {
    paths: Vec<PathBuf>,
    racy: &'a [bool],
    digests: Vec<Option<Digest>>,
}

impl ContentSource for TreeSource<'_> {
    fn open(&mut self, key: usize) -> io::Result<Box<dyn Read + '_>> {
        // Never through a symlink: the walk saw a regular file here; a link put in its place
        // since must not make the layer carry a file from outside the tree.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.paths[key])?;
        let reader = BufReader::with_capacity(1 << 16, file);
        if self.racy[key] {
            Ok(Box::new(Digesting {
                inner: reader,
                hasher: Some(HashingWriter::new(io::sink())),
                slot: &mut self.digests[key],
            }))
        } else {
            Ok(Box::new(reader))
        }
    }
}

/// A reader that records the digest of what it yielded once it reaches the end.
struct Digesting<'a> {
    inner: BufReader<File>,
    hasher: Option<HashingWriter<io::Sink>>,
    slot: &'a mut Option<Digest>,
}

impl Read for Digesting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.write_all(&buf[..n])?;
            }
        } else if !buf.is_empty() {
            if let Some(h) = self.hasher.take() {
                *self.slot = Some(h.finish().0);
            }
        }
        Ok(n)
    }
}

/// A written code layer and the content digests of its racy files.
pub struct Written {
    pub layer: LayerDescriptor,
    pub racy: BTreeMap<String, Digest>,
}

/// Writes the layer of `files` (under `root`) at `dest` (relative, e.g. `work`) to `out`.
/// `racy[i]` says whether the content digest of `files[i]` is wanted.
pub fn write_layer(
    root: &Path,
    files: &[TreeFile],
    dest: &str,
    racy: &[bool],
    out: impl Write,
) -> Result<Written, CodeError> {
    let layer_err = |source| CodeError::Layer {
        root: root.to_path_buf(),
        source,
    };
    let mut builder = LayerBuilder::new();
    builder.dir(dest).map_err(layer_err)?;
    let mut paths = Vec::with_capacity(files.len());
    let mut keyed_racy = Vec::with_capacity(files.len());
    let mut names = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let path = format!("{dest}/{}", file.rel);
        match &file.kind {
            FileKind::Regular { size, executable } => {
                let key = paths.len();
                paths.push(root.join(&file.rel));
                keyed_racy.push(racy.get(i).copied().unwrap_or(false));
                names.push(file.rel.clone());
                let content = FileContent::Streamed { key, size: *size };
                builder
                    .file(&path, *executable, content)
                    .map_err(layer_err)?;
            }
            FileKind::Symlink { target } => builder.symlink(&path, target).map_err(layer_err)?,
        }
    }
    let mut source = TreeSource {
        paths,
        racy: &keyed_racy,
        digests: vec![None; names.len()],
    };
    let layer = builder
        .write_with_level(&mut source, out, CODE_GZIP_LEVEL)
        .map_err(layer_err)?;
    let racy = names
        .into_iter()
        .zip(source.digests)
        .filter_map(|(name, digest)| Some((name, digest?)))
        .collect();
    Ok(Written { layer, racy })
}
