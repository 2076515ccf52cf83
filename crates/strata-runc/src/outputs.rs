//! Collecting a job's output directories when its attempt ends, whatever the outcome.
//!
//! What is collected is what the job **wrote**: the output directory as it is in the job's
//! overlay upper layer. A file the image (or a shipped code layer) already had there and the
//! job did not change is not an output and is not copied; a file the job deleted is not
//! there. The upper layer is written by the job, so it is untrusted like an image layer:
//! - every lookup starts from a handle of the upper directory and goes through `openat2`
//!   with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and every entry is opened with
//!   `O_NOFOLLOW`: a symlink (`outputs/evil -> /etc`, or `outputs` itself pointing
//!   elsewhere) is never followed; it is skipped and noted;
//! - only regular files and directories are copied; symlinks, devices, fifos, sockets and
//!   overlay whiteouts (0/0 character devices) are skipped, with a note;
//! - the entries visited and the bytes copied are capped ([`OutputLimits`]); a file that
//!   would pass the byte cap is skipped whole (never cut), and the copy is marked truncated.
//!
//! The copies are the agent's own (files 0600, directories 0700, whatever uid the job's
//! user namespace gave the originals). They are written into a temporary directory next to
//! the destination and renamed into place (an existing destination, from an earlier attempt
//! of a retried job, is swapped with `RENAME_EXCHANGE`), so a killed agent never leaves a
//! half result under the job's name; a later collection of that job removes its leftovers.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// The job directory's record of the outputs to collect, written at launch.
pub(crate) const OUTPUTS_FILE: &str = "outputs.json";
/// Under the destination: the collected content.
pub const FILES_DIR: &str = "files";
/// Under the destination: what was copied, skipped, cut ([`Collected`]).
pub const REPORT_FILE: &str = "collected.json";
/// At most this many notes are kept; the rest are counted.
const MAX_NOTES: usize = 100;

/// One output directory of a job, as the launcher is asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDir {
    /// Relative to the job's working directory, or absolute in the container. Must not
    /// contain `..`.
    pub path: PathBuf,
    /// Where its content goes under the destination's `files/` (relative, no `..`).
    pub stored_as: PathBuf,
}

/// An output resolved at launch: its absolute path in the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResolvedOutput {
    pub container_path: PathBuf,
    pub stored_as: PathBuf,
}

/// How much one collection may copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of file content, all outputs of the job together.
    pub max_bytes: u64,
    /// Entries visited (files, directories and what is skipped), all outputs together.
    pub max_entries: u64,
}

impl Default for OutputLimits {
    /// 1 GiB and 10,000 entries: a model checkpoint and its logs, not a data set.
    fn default() -> Self {
        OutputLimits {
            max_bytes: 1 << 30,
            max_entries: 10_000,
        }
    }
}

/// What one collection did (also `collected.json` in the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// A limit stopped the copy or made it skip a file: the result is partial.
    pub truncated: bool,
    /// Outputs that were not found in what the job wrote.
    pub missing: Vec<String>,
    /// What was skipped and why, and which limit was hit (at most 100, then a count).
    pub notes: Vec<String>,
}

impl Collected {
    fn note(&mut self, text: String) {
        match self.notes.len() {
            n if n < MAX_NOTES => self.notes.push(text),
            n if n == MAX_NOTES => self.notes.push("(more entries skipped)".into()),
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    #[error("outputs: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("outputs: {path:?} {reason}")]
    BadPath { path: PathBuf, reason: &'static str },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutputsError + '_ {
    move |source| OutputsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A relative path of plain names only (no `..`, `.`, or root).
fn plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The outputs of a launch, each made absolute against the job's working directory `cwd`.
pub(crate) fn resolve(
    outputs: &[OutputDir],
    cwd: &str,
) -> Result<Vec<ResolvedOutput>, OutputsError> {
    outputs
        .iter()
        .map(|o| {
            let bad = |reason| OutputsError::BadPath {
                path: o.path.clone(),
                reason,
            };
            if o.path.components().any(|c| c == Component::ParentDir) {
                return Err(bad("contains `..`"));
            }
            if !plain_relative(&o.stored_as) {
                return Err(bad("is stored under a path that is not plain and relative"));
            }
            let mut container_path = PathBuf::from("/");
            let joined = Path::new("/").join(cwd).join(&o.path);
            for part in joined.components() {
                match part {
                    Component::Normal(name) => container_path.push(name),
                    Component::ParentDir => {
                        container_path.pop();
                    }
                    _ => {}
                }
            }
            if container_path == Path::new("/") {
                return Err(bad("is the container's root"));
            }
            Ok(ResolvedOutput {
                container_path,
                stored_as: o.stored_as.clone(),
            })
        })
        .collect()
}

/// Copies `outputs` of a job whose working directory was `cwd` out of a job's upper layer
/// directory `upper` into `dest`, as [`crate::LocalLauncher::collect_outputs`] does for a
/// job it ran (benchmarks and tools that hold an upper directory use this).
pub fn collect_from_upper(
    upper: &Path,
    outputs: &[OutputDir],
    cwd: &str,
    dest: &Path,
    limits: OutputLimits,
) -> Result<Collected, OutputsError> {
    collect(upper, &resolve(outputs, cwd)?, dest, limits)
}

/// Copies the outputs out of the job's upper layer `upper` into `dest` (replaced as a
/// whole). Returns what was copied; `collected.json` in `dest` says the same.
pub(crate) fn collect(
    upper: &Path,
    outputs: &[ResolvedOutput],
    dest: &Path,
    limits: OutputLimits,
) -> Result<Collected, OutputsError> {
    let (parent, name) = match (dest.parent(), dest.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => {
            return Err(OutputsError::BadPath {
                path: dest.to_path_buf(),
                reason: "is not a directory path with a name",
            })
        }
    };
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    remove_leftovers(parent, name);
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Ours from a run of this very process that failed half-way.
    let _ = std::fs::remove_dir_all(&tmp);
    let result = fill(upper, outputs, &tmp, limits).and_then(|collected| {
        replace(&tmp, dest)?;
        Ok(collected)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Removes temporary directories an earlier (killed) collection of `name` left.
fn remove_leftovers(parent: &Path, name: &OsStr) {
    let prefix = format!(".tmp-{}-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Writes `files/` and `collected.json` into the new directory `tmp`.
fn fill(
    upper: &Path,
    outputs: &[ResolvedOutput],
    tmp: &Path,
    limits: OutputLimits,
) -> Result<Collected, OutputsError> {
    rfs::mkdir(tmp, Mode::from_raw_mode(0o700)).map_err(|e| io_at(tmp)(e.into()))?;
    let files = tmp.join(FILES_DIR);
    rfs::mkdir(&files, Mode::from_raw_mode(0o700)).map_err(|e| io_at(&files)(e.into()))?;
    let upper_fd = open_plain_dir(CWD, upper).map_err(io_at(upper))?;
    let files_fd = open_plain_dir(CWD, &files).map_err(io_at(&files))?;
    let mut walk = Walk {
        limits,
        collected: Collected::default(),
        entries: 0,
        upper,
    };
    for output in outputs {
        if walk.stopped() {
            break;
        }
        walk.output(upper_fd.as_fd(), files_fd.as_fd(), output)?;
    }
    let report = tmp.join(REPORT_FILE);
    let bytes = serde_json::to_vec_pretty(&walk.collected).unwrap_or_default();
    let mut file = create_private_file(CWD, report.as_os_str()).map_err(io_at(&report))?;
    io::Write::write_all(&mut file, &bytes).map_err(io_at(&report))?;
    Ok(walk.collected)
}

/// Moves `tmp` to `dest`; an existing `dest` is swapped out in one step and removed.
fn replace(tmp: &Path, dest: &Path) -> Result<(), OutputsError> {
    match rfs::renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {}
        Err(e) => return Err(io_at(dest)(e.into())),
    }
    rfs::renameat_with(CWD, tmp, CWD, dest, RenameFlags::EXCHANGE)
        .map_err(|e| io_at(dest)(e.into()))?;
    // `tmp` now holds the earlier collection; the caller removes it.
    Ok(())
}

struct Walk<'a> {
    limits: OutputLimits,
    collected: Collected,
    entries: u64,
    upper: &'a Path,
}

impl Walk<'_> {
    fn stopped(&self) -> bool {
        self.entries >= self.limits.max_entries
    }

    /// Copies one output: its directory in the upper layer, if the job wrote one.
    fn output(
        &mut self,
        upper: BorrowedFd<'_>,
        files: BorrowedFd<'_>,
        output: &ResolvedOutput,
    ) -> Result<(), OutputsError> {
        let shown = output.container_path.display().to_string();
        let in_upper = output
            .container_path
            .strip_prefix("/")
            .unwrap_or(&output.container_path);
        let source = match open_beneath(upper, in_upper) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.collected.missing.push(shown);
                return Ok(());
            }
            Err(e) if is_not_a_real_dir(&e) => {
                self.collected.missing.push(shown.clone());
                self.collected.note(format!(
                    "{shown}: not collected: it (or a directory on the way) is a symlink or not a directory"
                ));
                return Ok(());
            }
            Err(e) => return Err(io_at(&self.upper.join(in_upper))(e)),
        };
        let target = create_dirs(files, &output.stored_as).map_err(io_at(&output.stored_as))?;
        self.collected.dirs += 1;
        // Directories still to copy, relative to the output, each looked up again from the
        // output's handle (no handle is kept per directory: a wide tree would run out).
        let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let shown = output.container_path.join(&rel);
            let src = open_beneath(source.as_fd(), &rel).map_err(io_at(&shown))?;
            let dst = open_beneath(target.as_fd(), &rel).map_err(io_at(&shown))?;
            let mut subdirs =
                self.directory(&src, &dst, &output.container_path.join(&rel), &rel)?;
            // Sorted, popped in order: the same tree is walked (and cut) the same way.
            subdirs.reverse();
            pending.extend(subdirs);
            if self.stopped() {
                break;
            }
        }
        Ok(())
    }

    /// Copies the entries of one directory; returns its sub-directories (created in `dst`).
    fn directory(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        shown: &Path,
        rel: &Path,
    ) -> Result<Vec<PathBuf>, OutputsError> {
        let mut names = entry_names(src).map_err(io_at(shown))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if self.stopped() {
                self.collected.truncated = true;
                self.collected.note(format!(
                    "stopped after {} entries (max_files): {} and what follows were not collected",
                    self.limits.max_entries,
                    shown.join(&name).display()
                ));
                break;
            }
            self.entries += 1;
            let path = shown.join(&name);
            let stat = match rfs::statat(src, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(e) => return Err(io_at(&path)(e.into())),
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    rfs::mkdirat(dst, name.as_os_str(), Mode::from_raw_mode(0o700))
                        .map_err(|e| io_at(&path)(e.into()))?;
                    self.collected.dirs += 1;
                    subdirs.push(rel.join(&name));
                }
                FileType::RegularFile => self.file(src, dst, &name, stat.st_size as u64, &path)?,
                FileType::Symlink => {
                    let target = rfs::readlinkat(src, name.as_os_str(), Vec::new())
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.collected.note(format!(
                        "{}: a symlink (-> {target}), not followed, not collected",
                        path.display()
                    ));
                }
                FileType::CharacterDevice if stat.st_rdev == 0 => {
                    // An overlay whiteout: the job deleted a file the image had.
                }
                other => self.collected.note(format!(
                    "{}: {}, not collected (only files and directories are)",
                    path.display(),
                    kind(other)
                )),
            }
        }
        Ok(subdirs)
    }

    /// Copies one regular file, unless it would pass the byte limit.
    fn file(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &Path,
        size: u64,
        path: &Path,
    ) -> Result<(), OutputsError> {
        let left = self.limits.max_bytes - self.collected.bytes;
        if size > left {
            self.collected.truncated = true;
            self.collected.note(format!(
                "{}: {size} bytes, skipped: the outputs may hold {} bytes (max_size), {left} left",
                path.display(),
                self.limits.max_bytes
            ));
            return Ok(());
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rfs::openat(src, name.as_os_str(), flags, Mode::empty())
            .map_err(|e| io_at(path)(e.into()))?;
        // The job has ended, but check what was opened is still the regular file stat saw.
        let stat = rfs::fstat(&fd).map_err(|e| io_at(path)(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            self.collected.note(format!(
                "{}: changed while collected, skipped",
                path.display()
            ));
            return Ok(());
        }
        let mut out = create_private_file(dst.as_fd(), name.as_os_str()).map_err(io_at(path))?;
        // At most what was counted: a file cannot bring more than its share.
        let copied = io::copy(&mut File::from(fd).take(size), &mut out).map_err(io_at(path))?;
        self.collected.bytes += copied;
        self.collected.files += 1;
        Ok(())
    }
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}

/// The names in a directory, without `.` and `..`.
fn entry_names(dir: &OwnedFd) -> io::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(PathBuf::from(OsStr::from_bytes(bytes)));
        }
    }
    Ok(names)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `rel` below `dir`: never through a symlink, never out of `dir`.
fn open_beneath(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    Ok(rfs::openat2(dir, rel, dir_flags(), Mode::empty(), resolve)?)
}

/// Opens a directory of strata's own (the upper layer's root, the new `files/`).
fn open_plain_dir(dir: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, path, dir_flags(), Mode::empty())?)
}

/// Whether a lookup failed on a symlink, a non-directory or an escape.
fn is_not_a_real_dir(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

/// Creates `rel` (plain names) below `dir`, 0700, and opens it.
fn create_dirs(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut current = open_beneath(dir, Path::new(""))?;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain relative path",
            ));
        };
        match rfs::mkdirat(&current, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        current = open_beneath(current.as_fd(), Path::new(name))?;
    }
    Ok(current)
}

/// A new file, 0600, never through a symlink.
fn create_private_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn out(path: &str, stored: &str) -> OutputDir {
        OutputDir {
            path: path.into(),
            stored_as: stored.into(),
        }
    }

    #[test]
    fn outputs_resolve_against_the_working_directory() {
        let r = resolve(
            &[out("outputs", "outputs"), out("/data/x", "data/x")],
            "/work",
        )
        .unwrap();
        assert_eq!(r[0].container_path, Path::new("/work/outputs"));
        assert_eq!(r[1].container_path, Path::new("/data/x"));
        assert!(resolve(&[out("../etc", "etc")], "/work").is_err());
        assert!(resolve(&[out("outputs", "../x")], "/work").is_err());
        assert!(resolve(&[out("outputs", "/x")], "/work").is_err());
    }

    /// A tree like a job's upper layer (no root needed: symlinks, fifos, files).
    fn upper_with_outputs() -> tempfile::TempDir {
        let upper = tempfile::tempdir().unwrap();
        let o = upper.path().join("work/outputs");
        std::fs::create_dir_all(o.join("sub/deeper")).unwrap();
        std::fs::write(o.join("a.txt"), "alpha").unwrap();
        std::fs::write(o.join("sub/b.txt"), "beta").unwrap();
        std::fs::write(o.join("sub/deeper/c.bin"), vec![7u8; 3000]).unwrap();
        symlink("/etc", o.join("evil")).unwrap();
        symlink("/etc/passwd", o.join("sub/passwd")).unwrap();
        rustix::fs::mknodat(
            CWD,
            o.join("pipe"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        upper
    }

    fn resolved(path: &str) -> Vec<ResolvedOutput> {
        resolve(&[out(path, path.trim_start_matches('/'))], "/work").unwrap()
    }

    #[test]
    fn files_and_directories_are_copied_links_and_fifos_are_not() {
        let upper = upper_with_outputs();
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("outputs/j-1");
        let c = collect(
            upper.path(),
            &resolved("outputs"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        let files = dest.join("files/outputs");
        assert_eq!(
            std::fs::read_to_string(files.join("a.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read_to_string(files.join("sub/b.txt")).unwrap(),
            "beta"
        );
        assert_eq!(
            std::fs::read(files.join("sub/deeper/c.bin")).unwrap().len(),
            3000
        );
        for skipped in ["evil", "sub/passwd", "pipe"] {
            assert!(
                files.join(skipped).symlink_metadata().is_err(),
                "{skipped} copied"
            );
        }
        assert_eq!((c.files, c.bytes, c.truncated), (3, 5 + 4 + 3000, false));
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("evil") && n.contains("-> /etc")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("pipe") && n.contains("fifo")),
            "{:?}",
            c.notes
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.join("a.txt")), 0o600);
        assert_eq!(mode(&files.join("sub")), 0o700);
        assert_eq!(mode(&dest), 0o700);
        let report: Collected =
            serde_json::from_slice(&std::fs::read(dest.join(REPORT_FILE)).unwrap()).unwrap();
        assert_eq!(report, c);
    }

    #[test]
    fn an_output_that_is_a_symlink_is_not_followed() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("work")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("secret"), "host").unwrap();
        symlink(elsewhere.path(), upper.path().join("work/outputs")).unwrap();
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("j-2");
        let c = collect(
            upper.path(),
            &resolved("outputs"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        assert_eq!(c.files, 0);
        assert_eq!(c.missing, ["/work/outputs"]);
        assert!(!dest.join("files/outputs").exists());
        // Nor a symlinked directory on the way (the job made /work a link).
        let upper = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), upper.path().join("work")).unwrap();
        std::fs::create_dir_all(elsewhere.path().join("outputs")).unwrap();
        std::fs::write(elsewhere.path().join("outputs/secret"), "host").unwrap();
        let c = collect(
            upper.path(),
            &resolved("outputs"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        assert_eq!((c.files, c.missing.len()), (0, 1));
    }

    #[test]
    fn limits_skip_whole_files_and_stop_the_walk_and_say_so() {
        let upper = upper_with_outputs();
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("j-3");
        let limits = OutputLimits {
            max_bytes: 100,
            max_entries: 10_000,
        };
        let c = collect(upper.path(), &resolved("outputs"), &dest, limits).unwrap();
        assert!(c.truncated);
        assert_eq!((c.files, c.bytes), (2, 9));
        assert!(!dest.join("files/outputs/sub/deeper/c.bin").exists());
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("c.bin") && n.contains("max_size")),
            "{:?}",
            c.notes
        );

        let limits = OutputLimits {
            max_bytes: 1 << 20,
            max_entries: 2,
        };
        let c = collect(upper.path(), &resolved("outputs"), &dest, limits).unwrap();
        assert!(c.truncated);
        assert!(
            c.notes.iter().any(|n| n.contains("max_files")),
            "{:?}",
            c.notes
        );
        assert!(c.files + c.dirs <= 3, "{c:?}");
    }

    #[test]
    fn a_second_collection_replaces_the_first_and_leftovers_go() {
        let upper = upper_with_outputs();
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("outputs/j-4");
        // What a collection killed half-way leaves.
        std::fs::create_dir_all(home.path().join("outputs/.tmp-j-4-999999/files")).unwrap();
        collect(
            upper.path(),
            &resolved("outputs"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        std::fs::remove_file(upper.path().join("work/outputs/a.txt")).unwrap();
        std::fs::write(upper.path().join("work/outputs/new.txt"), "new").unwrap();
        collect(
            upper.path(),
            &resolved("outputs"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        assert!(!dest.join("files/outputs/a.txt").exists());
        assert!(dest.join("files/outputs/new.txt").exists());
        let names: Vec<_> = std::fs::read_dir(home.path().join("outputs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["j-4"]);
    }

    #[test]
    fn nothing_written_is_a_missing_output_not_an_error() {
        let upper = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let dest = home.path().join("j-5");
        let c = collect(
            upper.path(),
            &resolved("/data/out"),
            &dest,
            OutputLimits::default(),
        )
        .unwrap();
        assert_eq!(c.missing, ["/data/out"]);
        assert!(dest.join(REPORT_FILE).exists());
    }
}
