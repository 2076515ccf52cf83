//! What the launcher needs from an image in the store: its layers (bottom first) and the
//! parts of its config that shape the process (Env, WorkingDir, User, Entrypoint, Cmd).

use std::path::Path;

use serde::Deserialize;
use strata_oci::layout::{Store, StoreError};
use strata_oci::manifest::ManifestDocument;
use strata_oci::Digest;

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
#[error("image user {user:?}: {reason}")]
pub struct UserError {
    pub user: String,
    pub reason: String,
}

pub fn resolve_user(spec: Option<&str>, rootfs: &Path) -> Result<ResolvedUser, UserError> {
    let spec = spec.unwrap_or("").trim();
    let passwd = read_image_file(spec, rootfs, "etc/passwd")?;
    let group = read_image_file(spec, rootfs, "etc/group")?;
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let err = |reason: String| UserError {
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

/// The image's own account files are small; a larger one is not an account file.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// Reads `/{rel}` of the image as a regular file inside `rootfs` (its symlinks resolved
/// inside the image, never on the host; a FIFO or device refused without blocking), empty
/// when absent.
fn read_image_file(user: &str, rootfs: &Path, rel: &str) -> Result<String, UserError> {
    let err = |reason: String| UserError {
        user: user.to_string(),
        reason: format!("/{rel} of the image: {reason}"),
    };
    let bytes = crate::rootfs::beneath::read_file_in_root(rootfs, Path::new(rel), MAX_ACCOUNT_FILE)
        .map_err(|e| err(e.to_string()))?;
    String::from_utf8(bytes.unwrap_or_default()).map_err(|_| err("not UTF-8".to_string()))
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
}
