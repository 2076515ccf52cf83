//! The wheel cache: wheels by sha256 at `root/sha256/<hex>/<filename>`.
//!
//! A wheel enters the cache only after its bytes matched the lock's sha256 (and size, when
//! known): it is streamed into `root/tmp` while being hashed, fsynced, verified and then renamed
//! into place. A hit is verified again on read; a corrupt entry is removed and fetched anew.
//!
//! Downloads use reqwest's blocking client: call these functions from plain threads (or
//! `tokio::task::spawn_blocking`), not from inside an async task.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use strata_oci::{Digest, HashingWriter};

use crate::credentials::IndexCredentials;
use crate::lock::LockedWheel;

/// Clones share their state: the HTTP client and the entries admitted by
/// [`WheelCache::admit_local`] that no fetch has used yet.
#[derive(Clone)]
pub struct WheelCache {
    root: PathBuf,
    client: Arc<OnceLock<reqwest::blocking::Client>>,
    /// Entries this process wrote from bytes it hashed while writing them, with their size and
    /// modification time then: the first fetch of one takes it without hashing it again.
    admitted: Arc<Mutex<HashMap<PathBuf, Admitted>>>,
}

impl std::fmt::Debug for WheelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WheelCache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// What an admitted entry looked like when it was written.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Admitted {
    size: u64,
    modified: Option<std::time::SystemTime>,
}

impl Admitted {
    fn of(meta: &fs::Metadata) -> Admitted {
        Admitted {
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("wheel file name {filename:?} is not a plain file name")]
    BadFilename { filename: String },
    #[error("cannot fetch {filename} from {url}: only http(s)://, file:// URLs and absolute paths are supported")]
    UnsupportedUrl { filename: String, url: String },
    #[error("could not {action} for {filename}: {source}")]
    Io {
        filename: String,
        action: &'static str,
        source: io::Error,
    },
    /// The server wants (other) credentials: 401 or 403.
    #[error("could not download {filename} from {url}: the server answered {status} {}", match credentials {
        Some(source) => format!("to the credentials {source}"),
        None => "and strata had no credentials for it (give them in the index URL, ~/.netrc or a registry auth file)".to_string(),
    })]
    Unauthorized {
        filename: String,
        url: String,
        status: u16,
        /// Where the refused credentials came from, if any were sent.
        credentials: Option<String>,
    },
    #[error("could not download {filename} from {url}: {detail}")]
    Http {
        filename: String,
        url: String,
        detail: String,
    },
    #[error("{filename} from {source_url} has sha256 {actual}, but the lock expects {expected}; it was not added to the cache")]
    HashMismatch {
        filename: String,
        expected: Digest,
        actual: Digest,
        source_url: String,
    },
    #[error("{filename} from {source_url} is {actual} bytes, but the lock expects {expected}; it was not added to the cache")]
    SizeMismatch {
        filename: String,
        expected: u64,
        actual: u64,
        source_url: String,
    },
}

/// Where a wheel's bytes come from.
enum Source {
    Local(PathBuf),
    Http(url::Url),
}

impl WheelCache {
    /// A cache rooted at `root` (normally `$STRATA_HOME/wheels`); directories are made lazily.
    pub fn new(root: PathBuf) -> WheelCache {
        WheelCache {
            root,
            client: Arc::default(),
            admitted: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a wheel lives in the cache (whether or not it is there).
    pub fn path_of(&self, wheel: &LockedWheel) -> PathBuf {
        self.digest_dir(&wheel.sha256).join(&wheel.filename)
    }

    /// Whether some file is cached under this digest (not verified; [`Self::fetch`] verifies).
    pub fn contains(&self, digest: &Digest) -> bool {
        fs::read_dir(self.digest_dir(digest))
            .map(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().is_file())))
            .unwrap_or(false)
    }

    /// The path of the verified wheel in the cache, fetching it on a miss. A download sends
    /// Basic credentials only when `credentials` has some for the wheel URL's own origin
    /// (scheme, host and port).
    pub fn fetch(
        &self,
        wheel: &LockedWheel,
        credentials: &IndexCredentials,
    ) -> Result<PathBuf, FetchError> {
        check_filename(&wheel.filename)?;
        let dest = self.path_of(wheel);
        if dest.is_file() {
            if self.take_admitted(wheel, &dest) || self.cached_copy_is_valid(wheel, &dest)? {
                return Ok(dest);
            }
            tracing::warn!(filename = %wheel.filename, path = %dest.display(),
                "cached wheel does not match its sha256; fetching it again");
            remove_entry(&dest).map_err(io_err(wheel, "remove a corrupt cached wheel"))?;
        }
        self.fetch_into(wheel, &dest, credentials)?;
        Ok(dest)
    }

    /// Fetches every wheel with up to `jobs` threads; paths come back in input order. On
    /// failure the first error (in input order) is returned and no new fetches start.
    pub fn fetch_all(
        &self,
        wheels: &[LockedWheel],
        jobs: usize,
        credentials: &IndexCredentials,
    ) -> Result<Vec<PathBuf>, FetchError> {
        let results: Vec<Mutex<Option<Result<PathBuf, FetchError>>>> =
            wheels.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let workers = jobs.clamp(1, wheels.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= wheels.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = self.fetch(&wheels[i], credentials);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                });
            }
        });
        let results: Vec<Option<Result<PathBuf, FetchError>>> = results
            .into_iter()
            .map(|slot| slot.into_inner().ok().flatten())
            .collect();
        // Slots left empty were skipped after a failure, which is reported here.
        let mut paths = Vec::with_capacity(wheels.len());
        let mut skipped = 0;
        for result in results {
            match result {
                Some(Ok(path)) => paths.push(path),
                Some(Err(e)) => return Err(e),
                None => skipped += 1,
            }
        }
        if skipped == 0 {
            return Ok(paths);
        }
        Err(FetchError::Io {
            filename: String::new(),
            action: "finish all fetches",
            source: io::Error::other(format!("{skipped} fetches ended without a result")),
        })
    }

    /// Copies a local wheel file into the cache, hashing the bytes as they are copied (one
    /// read of the file), and answers their sha256 and size: the file's entry in a lock. The
    /// cache holds its own copy, never a link to the user's file, which may change later. An
    /// entry already there is kept (same digest, same bytes) and the copy dropped. When
    /// `cached` (from [`Self::entries_by_filename`]) has an entry of this name and size, the
    /// file is only hashed, and copied only if its digest is not among them: a warm cache is
    /// not written again.
    ///
    /// The copy is not fsynced: the cache is not the store. The lock names the user's file,
    /// not the copy, and every hit is verified on read except the first fetch by this process
    /// of an entry it admitted itself (see [`Self::fetch`]), so an entry a crash left torn is
    /// found, removed and copied again by the next run.
    pub fn admit_local(
        &self,
        path: &Path,
        filename: &str,
        cached: &HashMap<String, Vec<(Digest, u64)>>,
    ) -> io::Result<(Digest, u64)> {
        if check_filename(filename).is_err() {
            return Err(io::Error::other(format!(
                "wheel file name {filename:?} is not a plain file name"
            )));
        }
        let same_name = cached.get(filename).map(Vec::as_slice).unwrap_or_default();
        let size = fs::metadata(path)?.len();
        if same_name.iter().any(|(_, s)| *s == size) {
            let (digest, size) =
                Digest::of_reader(io::BufReader::with_capacity(1 << 18, File::open(path)?))?;
            if same_name.iter().any(|(d, s)| *d == digest && *s == size) {
                return Ok((digest, size));
            }
        }
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)?;
        let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        io::copy(&mut File::open(path)?, &mut writer)?;
        let (digest, size, buffered) = writer.finish();
        buffered.into_inner().map_err(|e| e.into_error())?;
        let dest = self.digest_dir(&digest).join(filename);
        if dest.is_file() {
            return Ok((digest, size));
        }
        fs::create_dir_all(dest.parent().unwrap_or(&self.root))?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        let admitted = Admitted::of(&fs::metadata(&dest)?);
        if let Ok(mut entries) = self.admitted.lock() {
            entries.insert(dest, admitted);
        }
        Ok((digest, size))
    }

    /// The digests and sizes of the cache's entries by file name: which local wheels may be
    /// in the cache already (a hint; [`Self::admit_local`] decides on the bytes).
    pub fn entries_by_filename(&self) -> HashMap<String, Vec<(Digest, u64)>> {
        let mut entries: HashMap<String, Vec<(Digest, u64)>> = HashMap::new();
        let Ok(dirs) = fs::read_dir(self.root.join("sha256")) else {
            return entries;
        };
        for dir in dirs.flatten() {
            let Some(digest) = dir
                .file_name()
                .to_str()
                .and_then(|h| Digest::from_hex(h).ok())
            else {
                continue;
            };
            let Ok(files) = fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let (Ok(name), Ok(meta)) = (file.file_name().into_string(), file.metadata()) else {
                    continue;
                };
                if meta.is_file() {
                    entries
                        .entry(name)
                        .or_default()
                        .push((digest.clone(), meta.len()));
                }
            }
        }
        entries
    }

    /// Whether `path` is an entry [`Self::admit_local`] wrote for this wheel's digest and size
    /// and that still looks as it did then; it is trusted once, later fetches verify it.
    fn take_admitted(&self, wheel: &LockedWheel, path: &Path) -> bool {
        let Ok(mut entries) = self.admitted.lock() else {
            return false;
        };
        let Some(admitted) = entries.remove(path) else {
            return false;
        };
        let unchanged = fs::metadata(path).is_ok_and(|m| Admitted::of(&m) == admitted);
        unchanged && wheel.size.is_none_or(|s| s == admitted.size)
    }

    fn digest_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.algorithm()).join(digest.hex())
    }

    fn cached_copy_is_valid(&self, wheel: &LockedWheel, path: &Path) -> Result<bool, FetchError> {
        let file = File::open(path).map_err(io_err(wheel, "open the cached wheel"))?;
        let (digest, size) = Digest::of_reader(io::BufReader::new(file))
            .map_err(io_err(wheel, "read the cached wheel"))?;
        Ok(digest == wheel.sha256 && wheel.size.is_none_or(|s| s == size))
    }

    /// Streams the wheel into a temporary file while hashing it, and renames it to `dest` only
    /// when digest and size match the lock.
    fn fetch_into(
        &self,
        wheel: &LockedWheel,
        dest: &Path,
        credentials: &IndexCredentials,
    ) -> Result<(), FetchError> {
        let source = parse_source(wheel)?;
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(io_err(wheel, "create the cache's tmp directory"))?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err(wheel, "create a temporary file in the cache"))?;
        let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        self.copy_from(&source, wheel, &mut writer, credentials)?;
        let (actual, size, buffered) = writer.finish();
        buffered
            .into_inner()
            .map_err(|e| io_err(wheel, "write the wheel")(e.into_error()))?
            .sync_all()
            .map_err(io_err(wheel, "fsync the wheel"))?;
        // Dropping `tmp` on the error paths below deletes it: nothing unverified stays.
        if actual != wheel.sha256 {
            return Err(FetchError::HashMismatch {
                filename: wheel.filename.clone(),
                expected: wheel.sha256.clone(),
                actual,
                source_url: redact(&wheel.url),
            });
        }
        if let Some(expected) = wheel.size.filter(|&s| s != size) {
            return Err(FetchError::SizeMismatch {
                filename: wheel.filename.clone(),
                expected,
                actual: size,
                source_url: redact(&wheel.url),
            });
        }
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err(wheel, "create the cache entry directory"))?;
        tmp.persist(dest)
            .map_err(|e| io_err(wheel, "move the wheel into the cache")(e.error))?;
        // Make the rename itself durable.
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(wheel, "fsync the cache entry directory"))?;
        Ok(())
    }

    fn copy_from(
        &self,
        source: &Source,
        wheel: &LockedWheel,
        out: &mut impl Write,
        credentials: &IndexCredentials,
    ) -> Result<(), FetchError> {
        match source {
            Source::Local(path) => {
                let mut file = File::open(path).map_err(io_err(wheel, "open the source wheel"))?;
                io::copy(&mut file, out).map_err(io_err(wheel, "copy the source wheel"))?;
            }
            Source::Http(url) => {
                let http_err = |detail: String| FetchError::Http {
                    filename: wheel.filename.clone(),
                    url: redact(url.as_str()),
                    detail,
                };
                let credential = credentials.for_url(url);
                let mut request = self
                    .client()
                    .map_err(|e| http_err(e.to_string()))?
                    .get(url.clone());
                if let Some(c) = credential {
                    request = request.basic_auth(&c.username, Some(c.password.expose()));
                }
                let response = request
                    .send()
                    .map_err(|e| http_err(e.without_url().to_string()))?;
                let status = response.status().as_u16();
                if matches!(status, 401 | 403) {
                    return Err(FetchError::Unauthorized {
                        filename: wheel.filename.clone(),
                        url: redact(url.as_str()),
                        status,
                        credentials: credential.map(|c| c.source.to_string()),
                    });
                }
                let mut response = response
                    .error_for_status()
                    .map_err(|e| http_err(e.without_url().to_string()))?;
                io::copy(&mut response, out).map_err(|e| http_err(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, reqwest::Error> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        install_crypto_provider();
        // Big wheels take minutes: no overall timeout (the blocking client's default is 30 s),
        // only one on connecting.
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(None)
            .build()?;
        Ok(self.client.get_or_init(|| client))
    }
}

/// rustls needs one process-wide crypto provider and strata compiles in only `ring` (no
/// second TLS backend): install it unless another part of the process already did.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn check_filename(filename: &str) -> Result<(), FetchError> {
    let plain = !filename.is_empty()
        && filename != "."
        && filename != ".."
        && !filename.contains(['/', '\\', '\0']);
    if plain {
        return Ok(());
    }
    Err(FetchError::BadFilename {
        filename: filename.to_string(),
    })
}

fn parse_source(wheel: &LockedWheel) -> Result<Source, FetchError> {
    let unsupported = || FetchError::UnsupportedUrl {
        filename: wheel.filename.clone(),
        url: redact(&wheel.url),
    };
    let url = wheel.url.as_str();
    if Path::new(url).is_absolute() {
        return Ok(Source::Local(PathBuf::from(url)));
    }
    let parsed = url::Url::parse(url).map_err(|_| unsupported())?;
    match parsed.scheme() {
        "file" => parsed
            .to_file_path()
            .map(Source::Local)
            .map_err(|()| unsupported()),
        "http" | "https" => Ok(Source::Http(parsed)),
        _ => Err(unsupported()),
    }
}

/// A URL for messages: credentials removed.
fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return url.to_string();
    }
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.to_string()
}

/// Removes a cache entry and its digest directory when that is left empty.
fn remove_entry(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        let _ = fs::remove_dir(dir); // fails harmlessly when not empty
    }
    Ok(())
}

fn io_err(wheel: &LockedWheel, action: &'static str) -> impl FnOnce(io::Error) -> FetchError {
    let filename = wheel.filename.clone();
    move |source| FetchError::Io {
        filename,
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_like_file_names() {
        for bad in ["", "..", "a/b.whl", "../x.whl"] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert!(check_filename("a-1-py3-none-any.whl").is_ok());
    }

    /// A wheel as a lock names it: `path`'s file, with `bytes`' digest and size.
    fn local_wheel(path: &Path, bytes: &[u8]) -> LockedWheel {
        LockedWheel {
            name: crate::name::PackageName::new("a").unwrap(),
            version: "1".into(),
            filename: "a-1-py3-none-any.whl".into(),
            sha256: Digest::of(bytes),
            size: Some(bytes.len() as u64),
            url: url::Url::from_file_path(path).unwrap().into(),
            built_from: None,
        }
    }

    #[test]
    fn an_admitted_local_wheel_is_a_copy_trusted_by_one_fetch_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = WheelCache::new(dir.path().join("cache"));
        let user = dir.path().join("a-1-py3-none-any.whl");
        fs::write(&user, b"wheel bytes").unwrap();
        let (digest, size) = cache
            .admit_local(&user, "a-1-py3-none-any.whl", &HashMap::new())
            .unwrap();
        assert_eq!((digest, size), (Digest::of(b"wheel bytes"), 11));
        let wheel = local_wheel(&user, b"wheel bytes");
        // The user's file changing later does not change the cache's copy.
        fs::write(&user, b"other bytes").unwrap();
        let path = cache
            .clone()
            .fetch(&wheel, &IndexCredentials::default())
            .unwrap();
        assert_eq!(path, cache.path_of(&wheel));
        assert_eq!(fs::read(&path).unwrap(), b"wheel bytes");
        // Trusted once: a later fetch verifies the entry, finds it corrupt and copies the
        // source again, which no longer matches the lock.
        fs::write(&path, b"WHEEL BYTES").unwrap();
        let err = cache
            .fetch(&wheel, &IndexCredentials::default())
            .unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
        assert!(!cache.path_of(&wheel).exists());
    }

    #[test]
    fn a_cached_name_and_size_with_other_bytes_is_still_copied() {
        let dir = tempfile::tempdir().unwrap();
        let cache = WheelCache::new(dir.path().join("cache"));
        let name = "a-1-py3-none-any.whl";
        let user = dir.path().join(name);
        fs::write(&user, b"wheel bytes").unwrap();
        let (first, _) = cache.admit_local(&user, name, &HashMap::new()).unwrap();
        let cached = cache.entries_by_filename();
        assert_eq!(cached[name], vec![(first.clone(), 11)]);
        assert_eq!(cache.admit_local(&user, name, &cached).unwrap().0, first);
        // Same name and size, other bytes: hashed, not found, copied as their own entry.
        fs::write(&user, b"WHEEL BYTES").unwrap();
        let (other, size) = cache.admit_local(&user, name, &cached).unwrap();
        assert_eq!((other.clone(), size), (Digest::of(b"WHEEL BYTES"), 11));
        let copy = cache.digest_dir(&other).join(name);
        assert_eq!(fs::read(copy).unwrap(), b"WHEEL BYTES");
    }

    #[test]
    fn an_admitted_entry_changed_before_its_fetch_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = WheelCache::new(dir.path().join("cache"));
        let user = dir.path().join("a-1-py3-none-any.whl");
        fs::write(&user, b"wheel bytes").unwrap();
        cache
            .admit_local(&user, "a-1-py3-none-any.whl", &HashMap::new())
            .unwrap();
        let wheel = local_wheel(&user, b"wheel bytes");
        fs::write(cache.path_of(&wheel), b"tampered wheel bytes").unwrap();
        // Verified, found corrupt, and fetched again from the (unchanged) source.
        let path = cache.fetch(&wheel, &IndexCredentials::default()).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"wheel bytes");
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("https://user:secret@example.com/a.whl"),
            "https://example.com/a.whl"
        );
        assert_eq!(redact("file:///x/a.whl"), "file:///x/a.whl");
    }
}
