//! Writing the files a server sends into a directory of the user's (`strata outputs --to`
//! through a server). Nothing the server names is trusted: a path must be plain names
//! below the directory, no existing directory on the way may be a symbolic link, and a file
//! may not be longer than listed.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The server sent more bytes than it listed.
    Longer,
}

/// `relative` as a path, if it is plain names (no root, `..`, `.` or empty part).
pub fn relative(relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && !relative.contains('\\')
        && relative.split('/').all(|p| !p.is_empty())
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(format!(
            "the server named an output file {relative:?} that is not a plain relative path"
        ));
    }
    Ok(path.to_path_buf())
}

/// Writes `from` to `to/relative` (replacing a file there, never writing through a link),
/// refusing more than `size` bytes. `to` is the user's and is created as needed; below it,
/// the directories on the way are created, and one that is a symbolic link is refused.
pub fn write(from: impl Read, to: &Path, relative: &Path, size: u64) -> Result<(), Error> {
    fs::create_dir_all(to).map_err(Error::Io)?;
    let mut dir = to.to_path_buf();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            dir.push(part);
            enter_dir(&dir).map_err(Error::Io)?;
        }
    }
    let target = to.join(relative);
    // The mode of a new file (umask applied), as a local copy gets: 0600 is the store's.
    let mut file = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(Error::Io)?;
    let copied = io::copy(&mut from.take(size + 1), &mut file).map_err(Error::Io)?;
    if copied > size {
        return Err(Error::Longer);
    }
    file.flush().map_err(Error::Io)?;
    // A rename replaces a link at the target itself, not what it points to.
    file.persist(&target).map_err(|e| Error::Io(e.error))?;
    Ok(())
}

/// Makes sure `dir` is a directory, not a link: creates it if missing.
fn enter_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symbolic link: outputs are not written through links",
            dir.display()
        ))),
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(dir),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_taken() {
        assert!(relative("run/metrics.csv").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\\b",
        ] {
            assert!(relative(bad).is_err(), "{bad:?} taken");
        }
    }

    #[test]
    fn files_go_below_the_destination_never_through_a_link_nor_longer_than_listed() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        write(&b"one"[..], &to, Path::new("run/a.txt"), 3).unwrap();
        assert_eq!(fs::read(to.join("run/a.txt")).unwrap(), b"one");

        std::os::unix::fs::symlink(&elsewhere, to.join("link")).unwrap();
        assert!(write(&b"x"[..], &to, Path::new("link/b.txt"), 1).is_err());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);

        // A link at the file itself is replaced, not written through.
        let victim = elsewhere.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, to.join("run/c.txt")).unwrap();
        write(&b"new"[..], &to, Path::new("run/c.txt"), 3).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(to.join("run/c.txt")).unwrap(), b"new");

        assert!(matches!(
            write(&b"longer"[..], &to, Path::new("d.txt"), 3),
            Err(Error::Longer)
        ));
        assert!(!to.join("d.txt").exists());
    }
}
