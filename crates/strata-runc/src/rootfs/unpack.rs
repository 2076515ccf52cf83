//! Unpacking one untrusted layer tar into its own directory. Every entry is created by a
//! `*at` call on a handle of its parent directory, found by [`beneath`] without following
//! symlinks: a layer whose symlink `a -> /host/dir` is followed by `a/x` (a file, a
//! directory, a whiteout, an opaque marker, a hard link) is refused instead of writing into
//! `/host/dir`. Device nodes other than whiteouts are refused, and the entry count and the
//! bytes written are capped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use strata_oci::Digest;

use super::beneath;
use super::{LayerLimits, RootfsError};

/// Where overlay expects a directory to hide everything below it in lower layers.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping, which overlay has no use for.
const META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// What an entry that cannot be unpacked safely is told.
const NOT_A_DIR: &str = "its parent is not a real directory of the layer (a symlink or a file)";

/// One entry's identity, for errors.
struct At<'a> {
    digest: &'a Digest,
    entry: &'a str,
}

impl At<'_> {
    fn refuse(&self, reason: &'static str) -> RootfsError {
        RootfsError::UnsafeEntry {
            digest: self.digest.clone(),
            entry: self.entry.to_string(),
            reason,
        }
    }

    fn io(&self, source: impl Into<io::Error>) -> RootfsError {
        RootfsError::Entry {
            digest: self.digest.clone(),
            entry: self.entry.to_string(),
            source: source.into(),
        }
    }

    /// A failed lookup of the parent: through a symlink or a file is a refusal.
    fn parent(&self, source: io::Error) -> RootfsError {
        if beneath::is_not_a_directory(&source) {
            return self.refuse(NOT_A_DIR);
        }
        self.io(source)
    }

    fn limit(&self, limit: u64, what: &'static str) -> RootfsError {
        RootfsError::Limit {
            digest: self.digest.clone(),
            entry: self.entry.to_string(),
            limit,
            what,
        }
    }
}

/// Owner, mode and mtime of an entry, from its header.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    times: Timestamps,
}

pub struct Unpacker<'a> {
    root: OwnedFd,
    digest: &'a Digest,
    limits: LayerLimits,
    entries: u64,
    bytes: u64,
    /// The previous entry's parent: a tar lists a directory's entries together.
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directory mtimes, set at the end since creating entries inside changes them.
    dir_times: Vec<(PathBuf, Timestamps)>,
}

impl<'a> Unpacker<'a> {
    pub fn new(dest: &Path, digest: &'a Digest, limits: LayerLimits) -> Result<Self, RootfsError> {
        let root = File::open(dest).map_err(|source| RootfsError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(Unpacker {
            root: root.into(),
            digest,
            limits,
            entries: 0,
            bytes: 0,
            parent: None,
            dir_times: Vec::new(),
        })
    }

    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), RootfsError> {
        let raw =
            entry
                .path()
                .map(|p| p.into_owned())
                .map_err(|source| RootfsError::BadArchive {
                    digest: self.digest.clone(),
                    source,
                })?;
        let name = raw.display().to_string();
        let at = At {
            digest: self.digest,
            entry: &name,
        };
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(at.limit(self.limits.max_entries, "entries"));
        }
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(()); // Metadata of other entries, already applied by the tar reader.
        }
        let relative = safe_relative(&raw).map_err(|r| at.refuse(r))?;
        let (Some(leaf), Some(parent)) = (relative.file_name(), relative.parent()) else {
            return Ok(()); // The root itself ("./"): the layer directory is ours.
        };
        let leaf = leaf.as_bytes();
        if leaf == OPAQUE_MARKER {
            let dir = self.parent_dir(&at, parent)?;
            return set_opaque(dir).map_err(|e| at.io(e));
        }
        if leaf.starts_with(META_PREFIX) {
            return Ok(());
        }
        if let Some(hidden) = leaf.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&at, parent, OsStr::from_bytes(hidden));
        }
        let leaf = OsStr::from_bytes(leaf);
        let meta = meta(entry.header()).map_err(|e| at.io(e))?;
        match kind {
            tar::EntryType::Directory => self.directory(&at, parent, leaf, meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(&at, entry, parent, leaf, meta)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.refuse("symlink without a target"))?
                    .into_owned();
                self.symlink(&at, parent, leaf, OsStr::from_bytes(&target), meta)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| at.refuse("hard link without a target"))?
                    .into_owned();
                self.hard_link(&at, parent, leaf, &target)
            }
            tar::EntryType::Fifo => self.fifo(&at, parent, leaf, meta),
            tar::EntryType::Char | tar::EntryType::Block => {
                Err(at.refuse("a device node (only whiteouts may be devices)"))
            }
            _ => Err(at.refuse("an unsupported entry type")),
        }
    }

    /// Sets the directories' mtimes, deepest first. A directory a later entry replaced (by
    /// a symlink or a file) or removed keeps no mtime: it is not there any more.
    pub fn finish(mut self) -> Result<(), RootfsError> {
        self.parent = None;
        for (rel, times) in self.dir_times.iter().rev() {
            let entry = rel.display().to_string();
            let at = At {
                digest: self.digest,
                entry: &entry,
            };
            let dir = match beneath::open_dir(self.root.as_fd(), rel) {
                Ok(dir) => dir,
                Err(e) if beneath::is_not_a_directory(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at.io(e)),
            };
            rfs::futimens(&dir, times).map_err(|e| at.io(e))?;
        }
        Ok(())
    }

    /// The handle of the entry's parent directory, created if the layer did not list it.
    fn parent_dir(&mut self, at: &At<'_>, parent: &Path) -> Result<BorrowedFd<'_>, RootfsError> {
        let cached = matches!(&self.parent, Some((p, _)) if p == parent);
        if !cached {
            let fd = beneath::create_dirs(self.root.as_fd(), parent).map_err(|e| at.parent(e))?;
            self.parent = Some((parent.to_path_buf(), fd));
        }
        match &self.parent {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(at.io(io::Error::other("no parent directory handle"))),
        }
    }

    /// Removes what an earlier entry put at `leaf` (a later entry replaces it, as tar does);
    /// a non-empty directory stays and the creation then fails.
    fn clear(&mut self, at: &At<'_>, parent: &Path, leaf: &OsStr) -> Result<(), RootfsError> {
        let dir = self.parent_dir(at, parent)?;
        match rfs::unlinkat(dir, leaf, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => {
                rfs::unlinkat(dir, leaf, AtFlags::REMOVEDIR).map_err(|e| at.io(e))?;
                // A cached handle may be the directory just removed.
                self.parent = None;
                Ok(())
            }
            Err(e) => Err(at.io(e)),
        }
    }

    /// An overlay whiteout: a character device 0/0 with the hidden name.
    fn whiteout(&mut self, at: &At<'_>, parent: &Path, hidden: &OsStr) -> Result<(), RootfsError> {
        if hidden.is_empty() || hidden.as_bytes().contains(&b'/') {
            return Err(at.refuse("a whiteout without a name"));
        }
        let dir = self.parent_dir(at, parent)?;
        let device = rfs::makedev(0, 0);
        match rfs::mknodat(
            dir,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            device,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => Err(at.refuse("a whiteout of a path this layer also creates")),
            Err(e) => Err(at.io(e)),
        }
    }

    fn directory(
        &mut self,
        at: &At<'_>,
        parent: &Path,
        leaf: &OsStr,
        meta: Meta,
    ) -> Result<(), RootfsError> {
        let dir = self.parent_dir(at, parent)?;
        let made = rfs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700));
        if made == Err(Errno::EXIST) {
            let existing =
                rfs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| at.io(e))?;
            if FileType::from_raw_mode(existing.st_mode) != FileType::Directory {
                self.clear(at, parent, leaf)?;
                let dir = self.parent_dir(at, parent)?;
                rfs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700)).map_err(|e| at.io(e))?;
            }
        } else {
            made.map_err(|e| at.io(e))?;
        }
        let dir = self.parent_dir(at, parent)?;
        let fd = beneath::open_dir(dir, Path::new(leaf)).map_err(|e| at.parent(e))?;
        rfs::fchown(&fd, Some(meta.uid), Some(meta.gid)).map_err(|e| at.io(e))?;
        rfs::fchmod(&fd, meta.mode).map_err(|e| at.io(e))?;
        self.dir_times.push((parent.join(leaf), meta.times));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        at: &At<'_>,
        entry: &mut tar::Entry<R>,
        parent: &Path,
        leaf: &OsStr,
        meta: Meta,
    ) -> Result<(), RootfsError> {
        let max = self.limits.max_bytes;
        // Refused on the declared size before a byte is written...
        if self.bytes.saturating_add(entry.size()) > max {
            return Err(at.limit(max, "bytes"));
        }
        self.clear(at, parent, leaf)?;
        let dir = self.parent_dir(at, parent)?;
        let mut file = beneath::create_file(dir, leaf).map_err(|e| at.io(e))?;
        // ...and on what is read, since a sparse entry expands past its size in the tar.
        let room = max - self.bytes;
        let written = io::copy(&mut entry.take(room + 1), &mut file).map_err(|e| at.io(e))?;
        self.bytes += written;
        if self.bytes > max {
            return Err(at.limit(max, "bytes"));
        }
        // Owner before mode: chown clears set-id bits.
        rfs::fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(|e| at.io(e))?;
        rfs::fchmod(&file, meta.mode).map_err(|e| at.io(e))?;
        rfs::futimens(&file, &meta.times).map_err(|e| at.io(e))
    }

    /// A symlink's target is only data here: it is resolved inside the container, and the
    /// unpacker never follows it.
    fn symlink(
        &mut self,
        at: &At<'_>,
        parent: &Path,
        leaf: &OsStr,
        target: &OsStr,
        meta: Meta,
    ) -> Result<(), RootfsError> {
        self.clear(at, parent, leaf)?;
        let dir = self.parent_dir(at, parent)?;
        rfs::symlinkat(target, dir, leaf).map_err(|e| at.io(e))?;
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        rfs::chownat(dir, leaf, Some(meta.uid), Some(meta.gid), nofollow).map_err(|e| at.io(e))?;
        rfs::utimensat(dir, leaf, &meta.times, nofollow).map_err(|e| at.io(e))
    }

    /// A hard link to an entry unpacked before, its path resolved inside the layer
    /// without following symlinks.
    fn hard_link(
        &mut self,
        at: &At<'_>,
        parent: &Path,
        leaf: &OsStr,
        target: &Path,
    ) -> Result<(), RootfsError> {
        let target =
            safe_relative(target).map_err(|_| at.refuse("a hard link leaving the layer"))?;
        let (Some(target_leaf), Some(target_parent)) = (target.file_name(), target.parent()) else {
            return Err(at.refuse("a hard link to the layer root"));
        };
        let from = beneath::open_dir(self.root.as_fd(), target_parent).map_err(|e| {
            if beneath::is_not_a_directory(&e) {
                at.refuse("a hard link through a symlink or a file")
            } else {
                at.io(e)
            }
        })?;
        let linked = rfs::statat(&from, target_leaf, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|_| at.refuse("a hard link to an entry not in the layer"))?;
        if FileType::from_raw_mode(linked.st_mode) == FileType::Directory {
            return Err(at.refuse("a hard link to a directory"));
        }
        self.clear(at, parent, leaf)?;
        let dir = self.parent_dir(at, parent)?;
        rfs::linkat(&from, target_leaf, dir, leaf, AtFlags::empty()).map_err(|e| at.io(e))
    }

    fn fifo(
        &mut self,
        at: &At<'_>,
        parent: &Path,
        leaf: &OsStr,
        meta: Meta,
    ) -> Result<(), RootfsError> {
        self.clear(at, parent, leaf)?;
        let dir = self.parent_dir(at, parent)?;
        rfs::mknodat(dir, leaf, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| at.io(e))?;
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        rfs::chownat(dir, leaf, Some(meta.uid), Some(meta.gid), nofollow).map_err(|e| at.io(e))?;
        // The FIFO was just made by us in a directory only we write: nothing can have
        // swapped it for a symlink, and fchmodat cannot be told not to follow one.
        rfs::chmodat(dir, leaf, meta.mode, AtFlags::empty()).map_err(|e| at.io(e))?;
        rfs::utimensat(dir, leaf, &meta.times, nofollow).map_err(|e| at.io(e))
    }
}

fn meta(header: &tar::Header) -> io::Result<Meta> {
    let id = |v: u64| {
        u32::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "owner id out of range"))
    };
    let mtime = i64::try_from(header.mtime()?).unwrap_or(i64::MAX);
    let time = rfs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Ok(Meta {
        uid: Uid::from_raw(id(header.uid()?)?),
        gid: Gid::from_raw(id(header.gid()?)?),
        mode: Mode::from_raw_mode(header.mode()? & 0o7777),
        times: Timestamps {
            last_access: time,
            last_modification: time,
        },
    })
}

/// Marks a directory opaque for overlay: lower layers' contents below it are hidden.
fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rfs::fsetxattr(
        dir,
        "trusted.overlay.opaque",
        b"y",
        XattrFlags::empty(),
    )?)
}

/// The entry's path relative to the layer root, refusing absolute paths and `..`.
pub fn safe_relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir => return Err("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(out)
}
