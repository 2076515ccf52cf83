//! The host ids a job's user namespace maps to, and the ownership of the files it uses.
//!
//! A job runs in its own user namespace: its uid 0..size is the host range
//! `host_uid..host_uid+size` (same for gids), so root in the job is an unprivileged user on
//! the host. The default range is [`IdRange::DEFAULT`] (100000:65536, the first range
//! `useradd` hands out in `/etc/subuid`); [`IdRange::from_subid`] reads a user's subordinate
//! ranges instead.
//!
//! runc 1.1 (Debian 12) cannot idmap mounts, so the unpacked layers are owned inside the
//! range on disk: each layer directory is shifted once per range by a `lchown` walk (see
//! [`shift_layer`]; the fixture base (55 MB, 1,166 entries) takes about 50 ms, once). A
//! stamp next to the layer records the range it is in, so the walk is not repeated, and a
//! home switched to another range shifts its layers again instead of mixing ranges.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    #[error("id range {0}: want HOST_UID:SIZE or HOST_UID:HOST_GID:SIZE with HOST_UID > 0 and SIZE >= 1")]
    BadRange(String),
    #[error("{path}: no subordinate ids for {user}")]
    NoSubordinateIds { path: PathBuf, user: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdMapError + '_ {
    move |source| IdMapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Container ids `0..size` are host uids `uid..uid+size` and host gids `gid..gid+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl IdRange {
    /// 65536 ids from 100000: what `useradd` gives the first user in `/etc/subuid`.
    pub const DEFAULT: IdRange = IdRange {
        uid: 100_000,
        gid: 100_000,
        size: 65_536,
    };

    /// `HOST_UID:SIZE` (gids the same) or `HOST_UID:HOST_GID:SIZE`. Host id 0 is refused:
    /// root in the job would be root on the host.
    pub fn parse(text: &str) -> Result<IdRange, IdMapError> {
        let bad = || IdMapError::BadRange(text.to_string());
        let nums: Vec<u32> = text
            .split(':')
            .map(|p| p.trim().parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let range = match nums[..] {
            [uid, size] => IdRange {
                uid,
                gid: uid,
                size,
            },
            [uid, gid, size] => IdRange { uid, gid, size },
            _ => return Err(bad()),
        };
        if range.uid == 0 || range.gid == 0 || range.size == 0 {
            return Err(bad());
        }
        if range.uid.checked_add(range.size).is_none()
            || range.gid.checked_add(range.size).is_none()
        {
            return Err(bad());
        }
        Ok(range)
    }

    /// The first subordinate range of `user` in `subuid` and `subgid` (normally
    /// `/etc/subuid`, `/etc/subgid`), the smaller size of the two.
    pub fn from_subid(user: &str, subuid: &Path, subgid: &Path) -> Result<IdRange, IdMapError> {
        let (uid, usize_) = first_subid(user, subuid)?;
        let (gid, gsize) = first_subid(user, subgid)?;
        let text = format!("{uid}:{gid}:{}", usize_.min(gsize));
        IdRange::parse(&text)
    }

    /// The host id a container id maps to; ids outside the range go to its last id (the
    /// kernel would show them as the overflow id anyway).
    fn host(base: u32, size: u32, id: u32) -> u32 {
        base + id.min(size - 1)
    }

    /// `uid:gid:size`, as recorded in a layer's stamp.
    pub fn stamp(&self) -> String {
        format!("{}:{}:{}", self.uid, self.gid, self.size)
    }
}

fn first_subid(user: &str, path: &Path) -> Result<(u32, u32), IdMapError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (name, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            (name == user).then_some(())?;
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .next()
        .ok_or_else(|| IdMapError::NoSubordinateIds {
            path: path.to_path_buf(),
            user: user.to_string(),
        })
}

/// The stamp file that records which range the layer at `dir` is shifted into.
fn stamp_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{name}.ids"))
}

/// Makes the unpacked layer at `dir` owned inside `range` (once: a stamp records it).
/// Returns whether it walked the layer. Concurrent callers for one layer take turns on a
/// lock file next to it; the walk never follows symlinks.
pub fn shift_layer(dir: &Path, range: IdRange) -> Result<bool, IdMapError> {
    let stamp = stamp_path(dir);
    let current = read_stamp(&stamp)?;
    if current == Some(range) {
        return Ok(false);
    }
    let mut lock_name = stamp.as_os_str().to_os_string();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    // Another launch may have shifted it while we waited.
    let current = read_stamp(&stamp)?;
    if current == Some(range) {
        return Ok(false);
    }
    let from = current.unwrap_or(IdRange {
        uid: 0,
        gid: 0,
        size: u32::MAX,
    });
    shift_tree(dir, from, range)?;
    let tmp = stamp.with_extension("ids.tmp");
    fs::write(&tmp, range.stamp()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &stamp).map_err(io_err(&stamp))?;
    Ok(true)
}

fn read_stamp(stamp: &Path) -> Result<Option<IdRange>, IdMapError> {
    match fs::read_to_string(stamp) {
        Ok(text) => Ok(IdRange::parse(text.trim()).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(stamp)(e)),
    }
}

/// Moves every entry under `root` (and `root` itself) from range `from` to range `to`.
fn shift_tree(root: &Path, from: IdRange, to: IdRange) -> Result<(), IdMapError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        shift_one(&path, &meta, from, to)?;
        if !meta.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&path).map_err(io_err(&path))? {
            stack.push(entry.map_err(io_err(&path))?.path());
        }
    }
    Ok(())
}

fn shift_one(
    path: &Path,
    meta: &fs::Metadata,
    from: IdRange,
    to: IdRange,
) -> Result<(), IdMapError> {
    let uid = IdRange::host(to.uid, to.size, meta.uid().saturating_sub(from.uid));
    let gid = IdRange::host(to.gid, to.size, meta.gid().saturating_sub(from.gid));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
    // chown clears set-user-id and set-group-id bits: put them back (a symlink has none).
    let special = meta.mode() & 0o6000;
    if special != 0 && !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err(path))?;
    }
    Ok(())
}

/// Gives `dir` (a job's upper, work or mount-point directory) to root of the range.
pub fn own_dir(dir: &Path, range: IdRange) -> Result<(), IdMapError> {
    std::os::unix::fs::lchown(dir, Some(range.uid), Some(range.gid)).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_host_root() {
        assert_eq!(IdRange::parse("100000:65536").unwrap(), IdRange::DEFAULT);
        assert_eq!(
            IdRange::parse("200000:300000:1000").unwrap(),
            IdRange {
                uid: 200_000,
                gid: 300_000,
                size: 1000
            }
        );
        for bad in ["0:65536", "100000:0", "x:1", "1", "4294967295:2"] {
            assert!(IdRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subordinate_ids_are_read_for_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let subuid = dir.path().join("subuid");
        let subgid = dir.path().join("subgid");
        fs::write(&subuid, "alice:100000:65536\nstrata:165536:65536\n").unwrap();
        fs::write(&subgid, "strata:165536:4096\n").unwrap();
        let r = IdRange::from_subid("strata", &subuid, &subgid).unwrap();
        assert_eq!((r.uid, r.gid, r.size), (165_536, 165_536, 4096));
        assert!(matches!(
            IdRange::from_subid("bob", &subuid, &subgid),
            Err(IdMapError::NoSubordinateIds { .. })
        ));
    }

    #[test]
    fn the_stamp_sits_next_to_the_layer() {
        assert_eq!(
            stamp_path(Path::new("/h/rootfs/abc")),
            Path::new("/h/rootfs/.abc.ids")
        );
    }
}
