//! The files and symlinks of a written layer, read back from its tar: how a layer built before
//! its paths were kept is checked against the other layers of an image.

use std::io::{self, Read};

use crate::assemble::{content_id, symlink_id};
use sha2::Digest;

use crate::content::Sha256Writer;
use crate::record::b64;

/// `(path, content)` of every file and symlink of an uncompressed layer tar, in the form of
/// [`crate::InstalledPath::content`]; directories are left out.
pub fn layer_paths(tar: impl Read) -> io::Result<Vec<(String, String)>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry.link_name()?.unwrap_or_default();
            out.push((path, symlink_id(&target.to_string_lossy())));
        } else if kind.is_file() {
            let executable = entry.header().mode()? & 0o111 != 0;
            let mut hasher = Sha256Writer::default();
            io::copy(&mut entry, &mut hasher)?;
            out.push((path, content_id(executable, &b64(&hasher.0.finalize()))));
        }
    }
    out.sort();
    Ok(out)
}
