//! Plain pins from uv matched to the wheel files of local find-links directories, hashed by
//! strata.
//!
//! Asked for a pylock.toml, uv hashes every wheel of every `--find-links` directory on each
//! run (a second per run for a data-science set), although strata needs the hash of one wheel
//! per package and reads those wheels anyway. So when every source is a local directory
//! (`--no-index`), uv writes plain `name==version` pins, and strata picks each package's wheel
//! from the directories itself (by the target's preference, as it does from a pylock.toml)
//! and hashes the chosen files, in parallel. With a wheel cache each file is hashed as it is
//! copied into the cache ([`WheelCache::admit_local`]): one read per wheel, and what the lock
//! names is the cache's copy, so a file the user changes afterwards changes nothing. Without
//! one the file is only hashed, and the fetch into the wheel cache hashes the bytes again as
//! it copies them, so a file changed in between fails that check rather than entering it.
//!
//! Anything this reading does not cover (a pin that is not `name==version`, a version no wheel
//! file spells the same way, a find-links entry that is not a directory) answers `None`, and
//! the caller resolves to a pylock.toml as before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use strata_oci::{Digest, HashingWriter};

use crate::fetch::WheelCache;
use crate::lock::LockedWheel;
use crate::name::PackageName;
use crate::spec::Sources;
use crate::target::Target;
use crate::wheel_name::WheelFilename;

/// The directories of `sources` when they are the only source (no index, no remote
/// find-links), else `None`.
pub(crate) fn local_directories(sources: &Sources) -> Option<Vec<PathBuf>> {
    let local_only = sources.no_index
        && sources.index_url.is_none()
        && sources.extra_index_urls.is_empty()
        && sources.find_links.is_empty()
        && !sources.local_find_links.is_empty();
    if !local_only {
        return None;
    }
    sources
        .local_find_links
        .iter()
        .map(|links| directory_of(links))
        .collect()
}

fn directory_of(links: &str) -> Option<PathBuf> {
    let path = match links.strip_prefix("file:") {
        Some(_) => url::Url::parse(links).ok()?.to_file_path().ok()?,
        None => PathBuf::from(links),
    };
    (path.is_absolute() && path.is_dir()).then_some(path)
}

/// One `name==version` line of uv's requirements.txt output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    pub name: PackageName,
    pub version: String,
}

/// uv's requirements.txt output (`--no-annotate --no-header`) as pins; `None` when a line is
/// anything else (a direct reference, an editable, a marker, hashes).
pub(crate) fn parse_pins(text: &str) -> Option<Vec<Pin>> {
    let mut pins = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, version) = line.split_once("==")?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '!'))
        };
        if !plain(name) || !plain(version) {
            return None;
        }
        pins.push(Pin {
            name: PackageName::new(name).ok()?,
            version: version.to_string(),
        });
    }
    Some(pins)
}

/// A wheel file found in a find-links directory.
struct Candidate {
    path: PathBuf,
    filename: String,
    parsed: WheelFilename,
}

/// The wheel of each pin: the target's preferred file among those of `directories` with the
/// pin's name and version (ties go to the first directory, then the first file name), hashed
/// on up to `jobs` threads (and copied into `cache`, if given). `None` when some pin has no
/// such file.
pub(crate) fn locked_wheels(
    pins: &[Pin],
    directories: &[PathBuf],
    target: &Target,
    jobs: usize,
    cache: Option<&WheelCache>,
) -> io::Result<Option<Vec<LockedWheel>>> {
    let candidates = candidates(directories)?;
    let mut chosen = Vec::with_capacity(pins.len());
    for pin in pins {
        let best = candidates
            .get(&pin.name)
            .into_iter()
            .flatten()
            .filter(|c| c.parsed.version == pin.version)
            .filter_map(|c| target.wheel_priority(&c.parsed).map(|p| (p, c)))
            .fold(None::<(u32, &Candidate)>, |best, (p, c)| match best {
                Some((bp, _)) if bp >= p => best,
                _ => Some((p, c)),
            });
        let Some((_, candidate)) = best else {
            tracing::debug!(package = %pin.name, version = %pin.version,
                "no wheel file spells this pin; resolving to a pylock.toml");
            return Ok(None);
        };
        chosen.push((pin, candidate));
    }
    let files: Vec<(&Path, &str)> = chosen
        .iter()
        .map(|(_, c)| (c.path.as_path(), c.filename.as_str()))
        .collect();
    let digests = hash_all(&files, jobs, cache)?;
    let wheels = chosen
        .into_iter()
        .zip(digests)
        .map(|((pin, candidate), (sha256, size))| {
            let url = url::Url::from_file_path(&candidate.path)
                .map(String::from)
                .map_err(|()| io::Error::other("a wheel path is not absolute"))?;
            Ok(LockedWheel {
                name: pin.name.clone(),
                version: pin.version.clone(),
                filename: candidate.filename.clone(),
                sha256,
                size: Some(size),
                url,
                built_from: None,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(wheels))
}

/// The wheel files of the directories by package name, in directory order, then by file name.
fn candidates(directories: &[PathBuf]) -> io::Result<BTreeMap<PackageName, Vec<Candidate>>> {
    let mut by_name: BTreeMap<PackageName, Vec<Candidate>> = BTreeMap::new();
    for directory in directories {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(directory)? {
            let entry = entry?;
            let Ok(filename) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(parsed) = WheelFilename::parse(&filename) else {
                continue;
            };
            // A regular file, or a link to one (as uv lists them).
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            files.push(Candidate {
                path,
                filename,
                parsed,
            });
        }
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        for file in files {
            by_name
                .entry(file.parsed.name.clone())
                .or_default()
                .push(file);
        }
    }
    Ok(by_name)
}

/// A file's sha256 and size, or why it could not be read.
type Hashed = io::Result<(Digest, u64)>;

/// sha256 and size of each file, in input order, on up to `jobs` threads; each file is
/// hashed while it is copied into `cache`, when there is one.
fn hash_all(
    files: &[(&Path, &str)],
    jobs: usize,
    cache: Option<&WheelCache>,
) -> io::Result<Vec<(Digest, u64)>> {
    let cached = cache
        .map(WheelCache::entries_by_filename)
        .unwrap_or_default();
    let results: Vec<Mutex<Option<Hashed>>> = files.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, files.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(path, filename)) = files.get(i) else {
                    break;
                };
                let result = match cache {
                    Some(cache) => cache.admit_local(path, filename, &cached),
                    None => hash_file(path),
                };
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(io::Error::other("a wheel was not hashed")))
        })
        .collect()
}

fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut writer = HashingWriter::new(io::sink());
    let mut buffer = vec![0u8; 1 << 18];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        io::Write::write_all(&mut writer, &buffer[..n])?;
    }
    let (digest, size, _) = writer.finish();
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::PythonVersion;

    fn target() -> Target {
        Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap())
    }

    #[test]
    fn plain_pins_are_read_and_anything_else_is_refused() {
        let pins = parse_pins("# comment\nNumPy==2.2.6\n\npython-dateutil==4.0.0\n").unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].name.as_str(), "numpy");
        assert_eq!(pins[1].version, "4.0.0");
        for other in [
            "x @ file:///w/x-1.0-py3-none-any.whl",
            "-e ./proj",
            "x==1.0 ; python_version > '3'",
            "x==1.0 \\",
            "x>=1.0",
        ] {
            assert_eq!(parse_pins(other), None, "{other}");
        }
    }

    #[test]
    fn the_preferred_wheel_of_each_pin_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes);
        write("gamma-1.0-py3-none-any.whl", b"pure").unwrap();
        write("gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", b"native").unwrap();
        write("gamma-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", b"arm").unwrap();
        write("gamma-2.0-py3-none-any.whl", b"newer").unwrap();
        write("notes.txt", b"not a wheel").unwrap();
        let pins = parse_pins("gamma==1.0\n").unwrap();
        let dirs = [dir.path().to_path_buf()];
        let wheels = locked_wheels(&pins, &dirs, &target(), 2, None)
            .unwrap()
            .unwrap();
        assert_eq!(wheels.len(), 1);
        let w = &wheels[0];
        assert_eq!(
            w.filename,
            "gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
        assert_eq!(w.sha256, Digest::of(b"native"));
        assert_eq!(w.size, Some(6));
        assert!(w.url.starts_with("file:///"), "{}", w.url);
        // A version no file spells: the caller falls back to uv's pylock.toml.
        let pins = parse_pins("gamma==1.0.0\n").unwrap();
        assert!(locked_wheels(&pins, &dirs, &target(), 2, None)
            .unwrap()
            .is_none());
    }
}
