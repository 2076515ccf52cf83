//! Paths inside a directory whose content an untrusted image controls. Every lookup starts
//! from a directory handle and goes through `openat2` with `RESOLVE_IN_ROOT`, so no `..`,
//! absolute path or symlink in the content can lead out of it; what is created is created by
//! `*at` calls on a handle found that way, never by a path string the kernel re-resolves.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How the unpacker resolves: inside the root and never through a symlink, because a
/// layer's own symlinks point into the container, not into the layer directory.
fn no_symlinks() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Whether a lookup failed because a component is a symlink, a non-directory, or would
/// leave the root: the path is not a real directory of the tree.
pub fn is_not_a_directory(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

fn relative(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// Opens the directory `rel` of `root` without following any symlink.
pub fn open_dir(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::openat2(
        root,
        relative(rel),
        dir_flags(),
        Mode::empty(),
        no_symlinks(),
    )?)
}

/// Opens the directory `rel` of `root`, creating the missing ones on the way (0755, as tar
/// does for entries whose parents it did not list). A component that exists and is not a
/// real directory is an error (see [`is_not_a_directory`]).
pub fn create_dirs(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    match open_dir(root, rel) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut current = open_dir(root, Path::new("."))?;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        };
        match rfs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        current = open_dir(current.as_fd(), Path::new(name))?;
    }
    Ok(current)
}

/// Creates the new regular file `leaf` in `dir` (0600 until its owner and mode are set).
pub fn create_file(dir: BorrowedFd<'_>, leaf: &OsStr) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat2(dir, leaf, flags, Mode::from_raw_mode(0o600), no_symlinks())?;
    Ok(File::from(fd))
}
