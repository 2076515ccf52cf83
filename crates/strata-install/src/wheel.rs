//! Opening and validating a wheel: the file name, safe and unique entry names, the one
//! `.dist-info` directory with METADATA, WHEEL and RECORD, and their agreement.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::ZipArchive;

use crate::record::{self, RecordEntry};
use crate::script::{self, EntryPoint};
use crate::{zipdir, InstallError};
use strata_python::PackageName;

/// Metadata files are read into memory; a larger one is not a real wheel.
const MAX_METADATA_FILE: u64 = 64 << 20;

pub type Archive = ZipArchive<BufReader<File>>;

/// A wheel whose structure and metadata have been checked (its file hashes not yet).
pub struct Wheel {
    /// The file name, for error messages.
    pub id: WheelId,
    pub archive: Archive,
    pub name: PackageName,
    pub version: String,
    /// `foo-1.0.dist-info`
    pub dist_info: String,
    /// `foo-1.0.data`
    pub data_dir: String,
    pub record: BTreeMap<String, RecordEntry>,
    pub entry_points: Vec<EntryPoint>,
}

/// The wheel's file name, with constructors of the errors that name it. A separate field so
/// errors can be built while the archive is borrowed.
#[derive(Debug, Clone)]
pub struct WheelId(pub String);

impl WheelId {
    pub fn invalid(&self, reason: impl Into<String>) -> InstallError {
        invalid(&self.0, reason)
    }

    pub fn corrupt(&self, entry: &str, reason: impl Into<String>) -> InstallError {
        InstallError::Corrupt {
            wheel: self.0.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    pub fn entry_error(&self, entry: &str, source: std::io::Error) -> InstallError {
        InstallError::Entry {
            wheel: self.0.clone(),
            entry: entry.to_string(),
            source,
        }
    }

    pub fn unsafe_entry(&self, entry: &str, reason: &'static str) -> InstallError {
        InstallError::UnsafeEntry {
            wheel: self.0.clone(),
            entry: entry.to_string(),
            reason,
        }
    }
}

fn invalid(wheel: &str, reason: impl Into<String>) -> InstallError {
    InstallError::Invalid {
        wheel: wheel.to_string(),
        reason: reason.into(),
    }
}

/// Caps on what one wheel may hold, checked on the zip's central directory before any
/// entry is inflated, against zip bombs (entries that inflate beyond their declared size
/// are stopped as they are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelLimits {
    /// Total uncompressed bytes of all entries.
    pub max_bytes: u64,
    /// Entries of the zip (directories included).
    pub max_entries: usize,
}

impl Default for WheelLimits {
    fn default() -> Self {
        WheelLimits {
            max_bytes: 8 << 30,
            max_entries: 200_000,
        }
    }
}

/// Opens `path` and checks everything but file hashes, refusing a wheel over `limits`.
pub fn open_with(path: &Path, limits: &WheelLimits) -> Result<Wheel, InstallError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let (name, file_version) = parse_file_name(&file_name)?;
    let read_err = |source| InstallError::Read {
        wheel: file_name.clone(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let raw_names = zipdir::entry_names(BufReader::new(&file)).map_err(read_err)?;
    let over = |limit: u64, what| InstallError::Limit {
        wheel: file_name.clone(),
        limit,
        what,
    };
    if raw_names.len() > limits.max_entries {
        return Err(over(limits.max_entries as u64, "entries"));
    }
    let mut archive =
        ZipArchive::new(BufReader::new(file)).map_err(|source| InstallError::Zip {
            wheel: file_name.clone(),
            source,
        })?;
    if declared_size(&file_name, &mut archive)? > u128::from(limits.max_bytes) {
        return Err(over(limits.max_bytes, "bytes uncompressed"));
    }
    check_entry_names(&file_name, &raw_names, &archive)?;
    let dist_info = find_dist_info(&file_name, &archive, &name)?;
    let data_dir = format!("{}.data", dist_info.trim_end_matches(".dist-info"));
    let mut wheel = Wheel {
        id: WheelId(file_name),
        archive,
        name,
        version: String::new(),
        dist_info,
        data_dir,
        record: BTreeMap::new(),
        entry_points: Vec::new(),
    };
    read_metadata(&mut wheel, &file_version)?;
    Ok(wheel)
}

/// The total uncompressed size the central directory declares. Reading an entry checks
/// that it does not inflate past its own declared size, so this bounds what is inflated.
fn declared_size(wheel: &str, archive: &mut Archive) -> Result<u128, InstallError> {
    if let Some(total) = archive.decompressed_size() {
        return Ok(total);
    }
    // Entries with data descriptors: the sizes are in the central directory all the same.
    let mut total = 0u128;
    for index in 0..archive.len() {
        let file = archive
            .by_index_raw(index)
            .map_err(|source| InstallError::Zip {
                wheel: wheel.to_string(),
                source,
            })?;
        total += u128::from(file.size());
    }
    Ok(total)
}

/// `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl` -> name and version.
fn parse_file_name(file_name: &str) -> Result<(PackageName, String), InstallError> {
    let err = |reason: &str| InstallError::FileName {
        wheel: file_name.to_string(),
        reason: reason.to_string(),
    };
    let stem = file_name
        .strip_suffix(".whl")
        .ok_or_else(|| err("does not end in .whl"))?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
        return Err(err("expected name-version[-build]-python-abi-platform.whl"));
    }
    let name = PackageName::new(parts[0]).map_err(|e| err(&e.to_string()))?;
    Ok((name, parts[1].to_string()))
}

/// Why an entry name is unsafe to install, if it is.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.contains('\0') {
        return Some("contains NUL");
    }
    if name.contains('\\') {
        return Some("contains a backslash (a Windows path)");
    }
    if name.starts_with('/') {
        return Some("absolute path");
    }
    let first = name.split('/').next().unwrap_or_default();
    if first.len() >= 2 && first.as_bytes()[1] == b':' && first.as_bytes()[0].is_ascii_alphabetic()
    {
        return Some("starts with a drive letter");
    }
    let path = name.strip_suffix('/').unwrap_or(name);
    for component in path.split('/') {
        match component {
            ".." => return Some("has a '..' component"),
            "." | "" => return Some("has an empty or '.' component"),
            _ => {}
        }
    }
    None
}

fn check_entry_names(
    wheel: &str,
    raw_names: &[Vec<u8>],
    archive: &Archive,
) -> Result<(), InstallError> {
    let mut seen = HashSet::new();
    for raw in raw_names {
        if !seen.insert(raw.as_slice()) {
            return Err(InstallError::DuplicateEntry {
                wheel: wheel.to_string(),
                entry: String::from_utf8_lossy(raw).into_owned(),
            });
        }
    }
    if raw_names.len() != archive.len() {
        // Distinct raw names that decode to the same name.
        return Err(invalid(
            wheel,
            format!(
                "central directory has {} entries but {} distinct names",
                raw_names.len(),
                archive.len()
            ),
        ));
    }
    for name in archive.file_names() {
        if let Some(reason) = unsafe_name(name) {
            return Err(InstallError::UnsafeEntry {
                wheel: wheel.to_string(),
                entry: name.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

/// The single top-level `*.dist-info` directory, which must name the same project.
fn find_dist_info(
    wheel: &str,
    archive: &Archive,
    name: &PackageName,
) -> Result<String, InstallError> {
    let mut dirs: Vec<&str> = archive
        .file_names()
        .filter_map(|n| n.split_once('/').map(|(top, _)| top))
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    let dir = match dirs.as_slice() {
        [] => return Err(invalid(wheel, "no .dist-info directory")),
        [dir] => dir.to_string(),
        more => {
            return Err(invalid(
                wheel,
                format!("several .dist-info directories: {more:?}"),
            ))
        }
    };
    let dir_name = dir.split('-').next().unwrap_or_default();
    let matches = PackageName::new(dir_name).is_ok_and(|n| &n == name);
    if !matches {
        return Err(invalid(
            wheel,
            format!("{dir} does not belong to project {name} of the file name"),
        ));
    }
    Ok(dir)
}

/// Reads a small text entry, `None` if absent.
pub fn read_text(wheel: &mut Wheel, entry: &str) -> Result<Option<String>, InstallError> {
    let Some(index) = wheel.archive.index_for_name(entry) else {
        return Ok(None);
    };
    let mut file = wheel
        .archive
        .by_index(index)
        .map_err(|e| wheel.id.corrupt(entry, e.to_string()))?;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_METADATA_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| wheel.id.entry_error(entry, e))?;
    drop(file);
    if bytes.len() as u64 > MAX_METADATA_FILE {
        return Err(wheel.id.corrupt(entry, "larger than 64 MiB"));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| wheel.id.corrupt(entry, "is not UTF-8"))
}

fn required_text(wheel: &mut Wheel, file: &str) -> Result<String, InstallError> {
    let entry = format!("{}/{file}", wheel.dist_info);
    read_text(wheel, &entry)?.ok_or_else(|| wheel.id.invalid(format!("{entry} is missing")))
}

/// Checks WHEEL, METADATA against the file name, and parses RECORD and entry points.
fn read_metadata(wheel: &mut Wheel, file_version: &str) -> Result<(), InstallError> {
    let wheel_file = required_text(wheel, "WHEEL")?;
    let wheel_version = header(&wheel_file, "Wheel-Version").ok_or_else(|| {
        wheel
            .id
            .invalid(format!("{}/WHEEL has no Wheel-Version", wheel.dist_info))
    })?;
    if wheel_version.split('.').next() != Some("1") {
        return Err(wheel.id.invalid(format!(
            "Wheel-Version {wheel_version} is not supported (only 1.x)"
        )));
    }
    let metadata = required_text(wheel, "METADATA")?;
    check_name_and_version(wheel, &metadata, file_version)?;
    let record_entry = format!("{}/RECORD", wheel.dist_info);
    let record_text = required_text(wheel, "RECORD")?;
    wheel.record = record::parse(&record_text).map_err(|e| InstallError::Record {
        wheel: wheel.id.0.clone(),
        file: record_entry,
        line: e.line,
        source: e.error,
    })?;
    let entry_points_file = format!("{}/entry_points.txt", wheel.dist_info);
    if let Some(text) = read_text(wheel, &entry_points_file)? {
        wheel.entry_points =
            script::parse_entry_points(&text).map_err(|e| InstallError::EntryPoints {
                wheel: wheel.id.0.clone(),
                file: entry_points_file,
                line: e.line,
                source: e.error,
            })?;
    }
    Ok(())
}

fn check_name_and_version(
    wheel: &mut Wheel,
    metadata: &str,
    file_version: &str,
) -> Result<(), InstallError> {
    let entry = format!("{}/METADATA", wheel.dist_info);
    let name =
        header(metadata, "Name").ok_or_else(|| wheel.id.invalid(format!("{entry} has no Name")))?;
    let version = header(metadata, "Version")
        .ok_or_else(|| wheel.id.invalid(format!("{entry} has no Version")))?;
    if PackageName::new(name).ok().as_ref() != Some(&wheel.name) {
        return Err(wheel.id.invalid(format!(
            "{entry} names project {name:?}, the file name {}",
            wheel.name
        )));
    }
    // File names escape `-` as `_`; compare in that form.
    let escaped = version.replace('-', "_").to_ascii_lowercase();
    if escaped != file_version.to_ascii_lowercase() {
        return Err(wheel.id.invalid(format!(
            "{entry} has version {version:?}, the file name {file_version:?}"
        )));
    }
    wheel.version = version.to_string();
    Ok(())
}

/// The first `Key: value` header of an email-style metadata file (stops at the body).
fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_names() {
        let (name, version) = parse_file_name("Foo_Bar-1.0.post1-py3-none-any.whl").unwrap();
        assert_eq!((name.as_str(), version.as_str()), ("foo-bar", "1.0.post1"));
        assert!(parse_file_name("foo-1.0-1-cp311-cp311-linux_x86_64.whl").is_ok());
        for bad in [
            "foo-1.0.whl",
            "foo-1.0-py3-none-any.zip",
            "-1.0-py3-none-any.whl",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_unsafe_names() {
        for bad in [
            "../evil",
            "/etc/passwd",
            "a/../../b",
            "C:/x",
            "c:x",
            "a\\b",
            "a//b",
            "./a",
        ] {
            assert!(unsafe_name(bad).is_some(), "{bad}");
        }
        for good in ["a/b.py", "dir/", "a..b/c", "x-1.0.dist-info/RECORD"] {
            assert_eq!(unsafe_name(good), None, "{good}");
        }
    }

    #[test]
    fn reads_headers_until_the_body() {
        let text = "Metadata-Version: 2.1\nName: Foo\nVersion: 1.0\n\nName: not this";
        assert_eq!(header(text, "name"), Some("Foo"));
        assert_eq!(header(text, "Summary"), None);
    }
}
