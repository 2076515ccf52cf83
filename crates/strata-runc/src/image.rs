//! What the launcher needs from an image in the store: its layers (bottom first) and the
//! parts of its config that shape the process (Env, WorkingDir, User, Entrypoint, Cmd).

use std::path::Path;

use serde::Deserialize;
use strata_oci::Digest;
use strata_oci::ManifestDocument;
use strata_oci::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {digest}: {source}")]
    Store {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("image {digest}: {what} is not valid JSON: {source}")]
    BadJson {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {0} is an image index, not a manifest: launch a platform manifest's digest")]
    IsIndex(Digest),
}

/// The image config fields that matter for running a process.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ProcessConfig>,
}

/// A resolved image: layer digests from bottom to top and its process config.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub layers: Vec<Digest>,
    pub config: ProcessConfig,
}

/// Reads (and verifies) the manifest and config of `manifest` from the store.
pub fn load_image(store: &Store, manifest: &Digest) -> Result<ImageInfo, ImageError> {
    let read = |digest: &Digest| {
        store.read_blob(digest).map_err(|source| ImageError::Store {
            digest: manifest.clone(),
            source,
        })
    };
    let bytes = read(manifest)?;
    let doc = ManifestDocument::parse(&bytes).map_err(|source| ImageError::BadJson {
        digest: manifest.clone(),
        what: "the manifest",
        source,
    })?;
    let ManifestDocument::Image(image) = doc else {
        return Err(ImageError::IsIndex(manifest.clone()));
    };
    let config_bytes = read(&image.config.digest)?;
    let blob: ConfigBlob =
        serde_json::from_slice(&config_bytes).map_err(|source| ImageError::BadJson {
            digest: manifest.clone(),
            what: "the config",
            source,
        })?;
    Ok(ImageInfo {
        layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
        config: blob.config.unwrap_or_default(),
    })
}

/// The uid, gid and home of the image's `User` ("", "name", "uid", "name:group",
/// "uid:gid"), names looked up in the container's /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("image user {user:?}: {reason}")]
    Unknown { user: String, reason: String },
    #[error("reading the image's /{path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Most bytes read from the image's /etc/passwd or /etc/group.
const ACCOUNT_FILE_MAX: u64 = 1 << 20;

/// Resolves `spec` against the IMAGE's account files in its unpacked root `rootfs` (not the
/// host's users: a name means what it means inside the image).
pub fn resolve_user(spec: Option<&str>, rootfs: &Path) -> Result<ResolvedUser, UserError> {
    let spec = spec.unwrap_or("").trim();
    let passwd = read_account_file(rootfs, "etc/passwd")?.unwrap_or_default();
    let group = read_account_file(rootfs, "etc/group")?.unwrap_or_default();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let err = |reason: String| UserError::Unknown {
        user: spec.to_string(),
        reason,
    };
    let entry =
        passwd_entries(&passwd).find(|e| e.name == user_part || e.uid.to_string() == user_part);
    let uid = match (user_part.parse::<u32>(), &entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => return Err(err(format!("no user {user_part:?} in /etc/passwd"))),
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                group_gid(&group, g).ok_or_else(|| err(format!("no group {g:?} in /etc/group")))?
            }
        },
        None => entry.as_ref().map(|e| e.gid).unwrap_or(0),
    };
    let home = entry
        .map(|e| e.home)
        .unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_string());
    Ok(ResolvedUser { uid, gid, home })
}

/// The image's `/etc/passwd` or `/etc/group` (`rel`, relative to the root), read as the
/// container will see it; `None` when it does not exist. The image is untrusted:
/// - every component of the path, symlinks included, resolves inside `rootfs` (openat2
///   RESOLVE_IN_ROOT, as in a chroot), so a link to `/etc/shadow` or `../../..` reaches the
///   image's own file, never the host's;
/// - only a regular file is read (a FIFO would block the launch, a device never end), and
///   at most [`ACCOUNT_FILE_MAX`] bytes of it.
fn read_account_file(rootfs: &Path, rel: &'static str) -> Result<Option<String>, UserError> {
    use std::io::Read;
    let read_err = |source| UserError::Read { path: rel, source };
    let root = std::fs::File::open(rootfs).map_err(read_err)?;
    let Some(fd) = open_in_root(&root, rel).map_err(read_err)? else {
        return Ok(None);
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        )));
    }
    let mut bytes = Vec::new();
    file.take(ACCOUNT_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > ACCOUNT_FILE_MAX {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {ACCOUNT_FILE_MAX} bytes"),
        )));
    }
    // Comment (GECOS) fields may be in any encoding; the fields used here are ASCII.
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Opens `rel` for reading with every component resolved inside `root`; `None` when it (or
/// a directory on the way) does not exist. Without openat2 (Linux before 5.6, or a seccomp
/// filter that refuses it), symlinks are refused instead of resolved.
fn open_in_root(root: &std::fs::File, rel: &str) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use rustix::fs::{openat, openat2, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    // NONBLOCK: opening a FIFO must not wait for a writer (the type is checked after).
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let opened = match openat2(root, rel, flags, Mode::empty(), resolve) {
        Err(Errno::NOSYS) | Err(Errno::PERM) => {
            let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
            let no_follow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
            openat(
                root,
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | no_follow,
                Mode::empty(),
            )
            .and_then(|dir| openat(&dir, name, flags | no_follow, Mode::empty()))
        }
        other => other,
    };
    match opened {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 6 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
        })
    })
}

fn group_gid(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_numbers_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = resolve_user(None, dir.path()).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let alice = resolve_user(Some("alice"), dir.path()).unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1001));
        assert_eq!(alice.home, "/home/alice");
        let mixed = resolve_user(Some("alice:staff"), dir.path()).unwrap();
        assert_eq!(mixed.gid, 50);
        let numeric = resolve_user(Some("4242:7"), dir.path()).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 7));
        assert!(resolve_user(Some("bob"), dir.path()).is_err());
    }

    fn rootfs_with_etc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
        dir
    }

    #[test]
    fn account_file_symlinks_resolve_inside_the_image_root() {
        let dir = rootfs_with_etc();
        let root = dir.path().join("rootfs");
        // A file outside the root that a host-side open would follow the links to.
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        let outside = dir.path().join("outside/passwd");
        std::fs::write(&outside, "evil:x:0:0::/evil:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        let err = resolve_user(Some("evil"), &root).unwrap_err();
        assert!(matches!(err, UserError::Unknown { .. }), "{err}");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../../../outside/passwd",
            root.join("etc/passwd"),
        )
        .unwrap();
        assert!(resolve_user(Some("evil"), &root).is_err());
        // An absolute link inside the image means the image's own file.
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/group"), "staff:x:50:\n").unwrap();
        std::os::unix::fs::symlink("/usr/lib/group", root.join("etc/group")).unwrap();
        assert_eq!(resolve_user(Some("0:staff"), &root).unwrap().gid, 50);
    }

    #[test]
    fn account_files_that_are_not_small_regular_files_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = rootfs_with_etc();
        let root = dir.path().join("rootfs");
        // A FIFO with no writer: a plain open would wait forever.
        let fifo = std::ffi::CString::new(root.join("etc/passwd").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path in our temporary directory.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = resolve_user(None, &root).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        let big = "x".repeat(ACCOUNT_FILE_MAX as usize + 1);
        std::fs::write(root.join("etc/passwd"), big).unwrap();
        let err = resolve_user(None, &root).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        // Absent files are fine: numeric users and root need no lookup.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(Some("12:34"), &root).unwrap().uid, 12);
    }
}
