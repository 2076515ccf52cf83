//! The local launcher's unpacked layers, `$STRATA_HOME/rootfs/<hex>/`: one directory per
//! layer digest, shared read-only by jobs as overlay lower directories (`strata-runc`'s
//! `LayerCache`). GC removes a directory once no kept image and no live lease reaches its
//! layer digest; this module lists them, tells which are mounted, and removes one safely.
//!
//! The layout contract with `strata-runc`: a directory named by a digest is always complete
//! (it is renamed into place after extraction), and `.<hex>.lock` is held while a layer is
//! being unpacked. Removal therefore takes that lock, renames the directory to
//! `.gc-<hex>` (so no complete-looking directory is ever half deleted) and deletes that;
//! `.gc-*` directories left by a killed sweep are deleted by the next one.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_oci::Digest;

use crate::scan::{metadata_if_exists, mtime_secs};

/// Where a removal moves a layer directory before deleting it.
const GC_PREFIX: &str = ".gc-";

/// An unpacked layer directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpackedLayer {
    pub layer: Digest,
    pub path: PathBuf,
    /// Bytes of its files (hard links counted once).
    pub size: u64,
    /// Modification time of the directory itself (unix seconds): when it was unpacked.
    pub mtime: i64,
}

/// The layer directories under `dir` and the leftovers of interrupted removals. A missing
/// `dir` (the launcher never ran) has none.
pub fn list(dir: &Path) -> io::Result<(Vec<UnpackedLayer>, Vec<PathBuf>)> {
    let mut layers = Vec::new();
    let mut leftovers = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((layers, leftovers)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        let Some(meta) = metadata_if_exists(&path)? else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if name.starts_with(GC_PREFIX) {
            leftovers.push(path);
            continue;
        }
        let Ok(layer) = Digest::from_hex(&name) else {
            continue; // `.tmp-*` extractions in progress, anything not ours
        };
        layers.push(UnpackedLayer {
            layer,
            size: tree_size(&path)?,
            mtime: mtime_secs(&meta),
            path,
        });
    }
    layers.sort_by(|a, b| a.layer.cmp(&b.layer));
    Ok((layers, leftovers))
}

/// Bytes of the regular files and symlinks below `dir`, each inode once.
fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed meanwhile: nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The mounts of this process's mount namespace, to tell which layer directories are in use.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    /// Mount points and every directory an overlay uses (lower, upper, work), resolved.
    paths: Vec<PathBuf>,
}

impl Mounts {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> io::Result<Mounts> {
        Ok(Mounts::parse(&fs::read_to_string("/proc/self/mountinfo")?))
    }

    pub fn parse(mountinfo: &str) -> Mounts {
        let mut paths = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4).map(unescape) else {
                continue;
            };
            let mut fields = right.split(' ');
            let fstype = fields.next().unwrap_or_default();
            let options = fields.nth(1).unwrap_or_default();
            if fstype == "overlay" {
                paths.extend(overlay_dirs(&PathBuf::from(&mount_point), options));
            }
            paths.push(PathBuf::from(mount_point));
        }
        Mounts { paths }
    }

    /// Whether `dir` is a mount point or holds one, or an overlay mount uses it (or a
    /// directory below it).
    pub fn uses(&self, dir: &Path) -> bool {
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        self.paths.iter().any(|p| p.starts_with(&dir))
    }
}

/// The directories an overlay's options name. A relative lower dir (strata's launcher
/// mounts with short links `0`, `1`, … from `<job>/l`, next to `<job>/upper` and the
/// mount point `<job>/rootfs`) is looked up in the `l` directory beside the upper dir and
/// beside the mount point, following the link.
fn overlay_dirs(mount_point: &Path, options: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut lowers = Vec::new();
    let mut bases = Vec::new();
    if let Some(parent) = mount_point.parent() {
        bases.push(parent.join("l"));
    }
    for option in split_unescaped(options, ',') {
        let Some((key, value)) = option.split_once('=') else {
            continue;
        };
        match key {
            "lowerdir" | "lowerdir+" | "datadir+" => {
                lowers.extend(split_unescaped(value, ':').into_iter().map(unescape))
            }
            "upperdir" | "workdir" => {
                let path = PathBuf::from(unescape(value));
                if let Some(parent) = path.parent() {
                    bases.push(parent.join("l"));
                }
                dirs.push(path);
            }
            _ => {}
        }
    }
    for lower in lowers {
        let lower = PathBuf::from(lower);
        if lower.is_absolute() {
            dirs.push(fs::canonicalize(&lower).unwrap_or(lower));
            continue;
        }
        for base in &bases {
            if let Ok(resolved) = fs::canonicalize(base.join(&lower)) {
                dirs.push(resolved);
            }
        }
    }
    dirs
}

/// Splits at `sep` unless escaped with a backslash (overlay escapes `,` and `:` in paths).
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`; overlay options escape
/// separators with a plain backslash.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                std::str::from_utf8(d)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 8).ok())
            });
            if let Some(b) = octal {
                out.push(b);
                i += 4;
                continue;
            }
            if let Some(&next) = bytes.get(i + 1) {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What [`remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    Yes,
    /// Not there (another GC, or never).
    Gone,
    /// A launch holds the layer's unpack lock.
    Busy,
}

/// Removes the layer directory `<dir>/<hex>`, holding its unpack lock so that no launch
/// unpacks it meanwhile.
pub fn remove(dir: &Path, layer: &Digest) -> io::Result<Removed> {
    let path = dir.join(layer.hex());
    if metadata_if_exists(&path)?.is_none() {
        return Ok(Removed::Gone);
    }
    let lock_path = dir.join(format!(".{}.lock", layer.hex()));
    let lock = File::create(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(Removed::Busy),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    // The launcher's stamp says which id range the layer's files were shifted into; a layer
    // unpacked again under this name must be shifted again, so the stamp goes first.
    match fs::remove_file(dir.join(format!(".{}.ids", layer.hex()))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let doomed = dir.join(format!("{GC_PREFIX}{}", layer.hex()));
    match fs::rename(&path, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::Gone),
        Err(e) => return Err(e),
    }
    remove_leftover(&doomed)?;
    // The lock file goes too; a launch that opened it meanwhile unpacks into a fresh dir.
    let _ = fs::remove_file(&lock_path);
    Ok(Removed::Yes)
}

/// Deletes a `.gc-*` directory (a removal in progress or interrupted).
pub fn remove_leftover(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removed layer takes its id-shift stamp with it: otherwise the layer unpacked again
    /// under the same name would be taken as shifted and keep host-root ownership.
    #[test]
    fn removing_a_layer_removes_its_id_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let layer = Digest::of(b"layer");
        fs::create_dir(dir.path().join(layer.hex())).unwrap();
        fs::write(dir.path().join(layer.hex()).join("f"), b"x").unwrap();
        let stamp = dir.path().join(format!(".{}.ids", layer.hex()));
        fs::write(&stamp, b"100000:100000:65536").unwrap();
        assert!(matches!(remove(dir.path(), &layer).unwrap(), Removed::Yes));
        assert!(!dir.path().join(layer.hex()).exists());
        assert!(!stamp.exists(), "the id stamp outlived its layer");
    }

    #[test]
    fn overlay_options_and_mount_points_are_in_use() {
        let info = "47 27 0:40 / /h/run/j1/rootfs rw - overlay overlay rw,lowerdir=/h/rootfs/aa:/h/rootfs/b\\:c,upperdir=/h/run/j1/upper,workdir=/h/run/j1/work\n\
                    48 27 0:41 / /mnt/a\\040b rw - ext4 /dev/sda rw\n";
        let mounts = Mounts::parse(info);
        assert!(mounts.uses(Path::new("/h/rootfs/aa")));
        assert!(mounts.uses(Path::new("/h/rootfs/b:c")));
        assert!(mounts.uses(Path::new("/mnt/a b")));
        assert!(mounts.uses(Path::new("/mnt")));
        assert!(!mounts.uses(Path::new("/mnt/a b/x")));
        assert!(!mounts.uses(Path::new("/h/rootfs/a")));
        assert!(!mounts.uses(Path::new("/h/rootfs/bb")));
    }
}
