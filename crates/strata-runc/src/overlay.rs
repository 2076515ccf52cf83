//! The per-job overlay root filesystem: shared read-only layer directories below, a
//! writable upper directory of the job's own above.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay for {target}: {source}")]
    Io {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting the overlay at {target} failed: {message}")]
    Mount { target: PathBuf, message: String },
    #[error("unmounting {target} failed: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directories of one job's overlay.
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    /// Short symlinks `0`, `1`, ... to the layer directories, top layer first: the mount
    /// options then stay far below the kernel's one-page limit even with 100 layers of
    /// 64-hex-digit names.
    pub links: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

impl OverlayDirs {
    pub fn under(job_dir: &Path) -> OverlayDirs {
        OverlayDirs {
            links: job_dir.join("l"),
            upper: job_dir.join("upper"),
            work: job_dir.join("work"),
            target: job_dir.join("rootfs"),
        }
    }
}

/// Mounts `layers` (bottom first, as in a manifest) with a fresh upper layer at
/// `dirs.target`.
pub fn mount_overlay(dirs: &OverlayDirs, layers: &[PathBuf]) -> Result<(), OverlayError> {
    let io_err = |source| OverlayError::Io {
        target: dirs.target.clone(),
        source,
    };
    for dir in [&dirs.links, &dirs.upper, &dirs.work, &dirs.target] {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut lower = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().rev().enumerate() {
        let name = i.to_string();
        let link = dirs.links.join(&name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(layer, &link).map_err(io_err)?;
        }
        lower.push(name);
    }
    if lower.is_empty() {
        // An image without layers: an empty read-only lower directory.
        let empty = dirs.links.join("empty");
        std::fs::create_dir_all(&empty).map_err(io_err)?;
        lower.push("empty".to_string());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dirs.upper.display(),
        dirs.work.display()
    );
    // Relative lower dirs resolve against mount's working directory (the links dir);
    // running mount(8) keeps our own process's working directory untouched.
    let output = Command::new("mount")
        .current_dir(&dirs.links)
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&dirs.target)
        .output()
        .map_err(io_err)?;
    if !output.status.success() {
        return Err(OverlayError::Mount {
            target: dirs.target.clone(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Unmounts `target` if it is mounted. Absent or not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), OverlayError> {
    if !is_mounted(target) {
        return Ok(());
    }
    let c = CString::new(target.as_os_str().as_bytes()).map_err(|_| OverlayError::Io {
        target: target.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"),
    })?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        // Something (a shell cd'ed into it) holds it: detach it now, it goes when freed.
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
    }
    Err(OverlayError::Unmount {
        target: target.to_path_buf(),
        source: err,
    })
}

/// Whether `target` is a mount point in this process's mount namespace, read from
/// `/proc/self/mountinfo` (the way an outside observer would check).
pub fn is_mounted(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo_has(&info, target)
}

fn mountinfo_has(info: &str, target: &Path) -> bool {
    let want = target.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(unescape_octal)
            .is_some_and(|mount_point| mount_point == want)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_with_escapes() {
        let info = "36 35 98:0 / /mnt/a\\040b rw - ext4 /dev/x rw\n\
                    37 35 0:1 / /proc rw - proc proc rw\n";
        assert!(mountinfo_has(info, Path::new("/mnt/a b")));
        assert!(mountinfo_has(info, Path::new("/proc")));
        assert!(!mountinfo_has(info, Path::new("/mnt")));
    }
}
