//! Blob calls: existence and size, cross-repository mount, streamed upload from a file and
//! verified, streamed download to a file. Layers can be gigabytes: nothing here holds a blob
//! in memory.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use oci_client::errors::{DigestError, OciDistributionError};
use reqwest::header::CONTENT_LENGTH;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWrite};

use crate::client::Registry;
use crate::error::RegistryError;
use crate::reference::RegistryRepo;
use crate::token::Access;
use strata_oci::{BlobDescriptor, Digest};

/// Read size of upload streams: big enough for few syscalls, small enough to not matter.
const UPLOAD_CHUNK: usize = 256 * 1024;

impl Registry {
    /// Whether `repo` has the blob (HEAD).
    pub async fn blob_exists(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("checking for blob {digest} in {}", repo.repository);
        self.prepare_oci_auth(repo).await?;
        let (image, digest_text, action) = (&self.oci_ref(repo), &digest.to_string(), &action);
        self.with_retry(action, move || async move {
            self.oci
                .blob_exists(image, digest_text)
                .await
                .map_err(|e| self.oci_error(action, digest_text, e))
        })
        .await
    }

    /// The size the registry holds for the blob (HEAD's `Content-Length`), or `None` if `repo`
    /// lacks it. Unlike [`Registry::blob_exists`] this can tell a blob that landed whole.
    pub async fn blob_size(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("checking the size of blob {digest} in {}", repo.repository);
        let url = self.url(repo, &format!("blobs/{digest}"));
        self.with_retry(&action, || async {
            let response = self
                .send_authorized(&action, repo, Access::Pull, || self.http.head(&url))
                .await?;
            match response.status() {
                StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => self.content_length(&action, &response).map(Some),
                _ => Err(self.status_error(&action, response).await),
            }
        })
        .await
    }

    /// Read from the header: for a HEAD the body is empty, so the body's length says nothing.
    fn content_length(
        &self,
        action: &str,
        response: &reqwest::Response,
    ) -> Result<u64, RegistryError> {
        let value = response.headers().get(CONTENT_LENGTH);
        value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                self.protocol_error(action, format!("bad or missing Content-Length {value:?}"))
            })
    }

    /// Asks the registry to link a blob that `from` has into `repo` without uploading it.
    /// `Ok(false)` when the registry declined (it answers 202 and opens an upload instead, e.g.
    /// when `from` lacks the blob): the caller uploads.
    pub async fn mount_blob(
        &self,
        repo: &RegistryRepo,
        from: &RegistryRepo,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        self.check_repo(repo)?;
        self.check_repo(from)?;
        let action = format!(
            "mounting blob {digest} from {} into {}",
            from.repository, repo.repository
        );
        self.prepare_oci_auth(repo).await?;
        let (target, source) = (&self.oci_ref(repo), &self.oci_ref(from));
        let (digest_text, action) = (&digest.to_string(), &action);
        self.with_retry(action, move || async move {
            match self.oci.mount_blob(target, source, digest_text).await {
                Ok(()) => Ok(true),
                // oci-client reports a 202 (mount declined) as a spec violation.
                Err(OciDistributionError::SpecViolationError(detail)) => {
                    tracing::debug!(%detail, "mount declined, will upload");
                    Ok(false)
                }
                Err(e) => Err(self.oci_error(action, digest_text, e)),
            }
        })
        .await
    }

    /// Uploads the blob at `path` in one streamed PUT. The file must have the descriptor's size;
    /// the registry checks the digest.
    pub async fn push_blob_file(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
        path: &Path,
    ) -> Result<(), RegistryError> {
        self.check_repo(repo)?;
        let action = format!(
            "uploading blob {} from {} to {}",
            blob.digest,
            path.display(),
            repo.repository
        );
        let local_size = tokio::fs::metadata(path)
            .await
            .map_err(|source| io_error("reading the size of a blob to upload", path, source))?
            .len();
        if local_size != blob.size {
            return Err(RegistryError::SizeMismatch {
                what: format!("blob {} at {}", blob.digest, path.display()),
                expected: blob.size,
                actual: local_size,
            });
        }
        self.prepare_oci_auth(repo).await?;
        let (image, digest_text, action) = (&self.oci_ref(repo), &blob.digest.to_string(), &action);
        self.with_retry(action, move || async move {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|source| io_error("opening a blob to upload", path, source))?;
            self.oci
                .push_blob_stream(image, file_chunks(file), digest_text, Some(blob.size))
                .await
                .map(|_location| ())
                .map_err(|e| self.oci_error(action, digest_text, e))
        })
        .await
    }

    /// Uploads a small blob held in memory (a few bytes of JSON, such as the config of a usage
    /// record) in one request; the registry checks the digest.
    pub async fn push_blob_bytes(
        &self,
        repo: &RegistryRepo,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        self.check_repo(repo)?;
        let digest = Digest::of(bytes);
        let action = format!("uploading blob {digest} to {}", repo.repository);
        self.prepare_oci_auth(repo).await?;
        let (image, digest_text, action) = (&self.oci_ref(repo), &digest.to_string(), &action);
        self.with_retry(action, move || async move {
            self.oci
                .push_blob(image, Bytes::copy_from_slice(bytes), digest_text)
                .await
                .map(|_location| ())
                .map_err(|e| self.oci_error(action, digest_text, e))
        })
        .await?;
        Ok(digest)
    }

    /// Downloads a blob to `dest`, verifying size and digest. The bytes go to a temporary file
    /// next to `dest`, which is fsynced and renamed into place only once it verifies: `dest`
    /// never holds a partial or wrong blob.
    pub async fn pull_blob_to_file(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
        dest: &Path,
    ) -> Result<(), RegistryError> {
        self.check_repo(repo)?;
        let action = format!(
            "downloading blob {} from {} to {}",
            blob.digest,
            repo.repository,
            dest.display()
        );
        let temp = temp_path_for(dest);
        self.prepare_oci_auth(repo).await?;
        let result = self
            .with_retry(&action, || self.pull_blob_once(repo, blob, &temp, &action))
            .await;
        let result = match result {
            Ok(()) => commit(&temp, dest).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Best effort: a leftover partial file is only wasted space, never read.
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// Downloads a small blob into memory (at most its descriptor's size, which the caller
    /// bounds), verifying size and digest.
    pub async fn pull_blob_bytes(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("downloading blob {} from {}", blob.digest, repo.repository);
        let what = format!("blob {} in {}", blob.digest, repo);
        self.prepare_oci_auth(repo).await?;
        let (action, what) = (&action, &what);
        self.with_retry(action, || async move {
            let mut bytes = Vec::new();
            self.pull_limited(repo, blob, &mut bytes, action, what, |e| {
                self.oci_error(action, what, OciDistributionError::IoError(e))
            })
            .await?;
            let actual = Digest::of(&bytes);
            if actual != blob.digest {
                return Err(RegistryError::DigestMismatch {
                    registry: self.host().to_string(),
                    what: what.clone(),
                    expected: blob.digest.clone(),
                    actual,
                });
            }
            Ok(bytes)
        })
        .await
    }

    async fn pull_blob_once(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
        temp: &Path,
        action: &str,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {} in {}", blob.digest, repo);
        let mut file = tokio::fs::File::create(temp)
            .await
            .map_err(|source| io_error("creating a temporary file for a blob", temp, source))?;
        self.pull_limited(repo, blob, &mut file, action, &what, |source| {
            io_error("writing a downloaded blob", temp, source)
        })
        .await?;
        file.sync_all()
            .await
            .map_err(|source| io_error("syncing a downloaded blob", temp, source))
    }

    /// Pulls `blob` into `sink`, refusing more bytes than its descriptor says and fewer
    /// (oci-client checks the digest of what arrived). `write_error` names a failed write.
    async fn pull_limited<W: AsyncWrite + Unpin>(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
        sink: &mut W,
        action: &str,
        what: &str,
        write_error: impl FnOnce(io::Error) -> RegistryError,
    ) -> Result<(), RegistryError> {
        let progress = AtomicU64::new(0);
        let mut writer = LimitedWriter {
            inner: sink,
            written: 0,
            limit: blob.size,
            progress: &progress,
        };
        let digest_text = blob.digest.to_string();
        let reference = self.oci_ref(repo);
        let pulled = {
            let pull = self
                .oci
                .pull_blob(&reference, digest_text.as_str(), &mut writer);
            tokio::select! {
                pulled = pull => Some(pulled),
                () = stalled(&progress, self.stall) => None,
            }
        };
        let Some(pulled) = pulled else {
            return Err(RegistryError::Stalled {
                registry: self.host().to_string(),
                action: action.to_string(),
                waited: self.stall,
            });
        };
        let pulled = match pulled {
            // oci-client checks the bytes against the Docker-Content-Digest header before the
            // digest asked for: bytes that hash to the latter are the blob, the header is wrong.
            Err(OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            })) if actual == digest_text => {
                tracing::warn!(registry = %self.host(), blob = %digest_text, header = %expected,
                    "the registry's Docker-Content-Digest header names another digest than the bytes it sent");
                Ok(())
            }
            // Checked against a header naming another digest, bytes that are not the blob
            // either: the error names the digest asked for, not the header's.
            Err(OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            })) if expected != digest_text => {
                return match actual.parse() {
                    Ok(actual) => Err(RegistryError::DigestMismatch {
                        registry: self.host().to_string(),
                        what: what.to_string(),
                        expected: blob.digest.clone(),
                        actual,
                    }),
                    Err(_) => Err(self.protocol_error(
                        action,
                        format!("digest mismatch for {what}: got {actual}"),
                    )),
                };
            }
            other => other,
        };
        let written = writer.written;
        let size_mismatch = || RegistryError::SizeMismatch {
            what: what.to_string(),
            expected: blob.size,
            actual: written,
        };
        // Past the limit, the write error is ours: the registry sent too much.
        if written > blob.size {
            return Err(size_mismatch());
        }
        pulled.map_err(|e| match e {
            OciDistributionError::IoError(source) => write_error(source),
            other => self.oci_error(action, what, other),
        })?;
        // The digest matched, so a short blob means the descriptor's size is wrong.
        if written != blob.size {
            return Err(size_mismatch());
        }
        Ok(())
    }
}

/// Renames the verified temporary file into place and syncs the directory so the rename
/// survives a crash.
async fn commit(temp: &Path, dest: &Path) -> Result<(), RegistryError> {
    tokio::fs::rename(temp, dest)
        .await
        .map_err(|source| io_error("renaming a downloaded blob into place", dest, source))?;
    let dir = parent_dir(dest);
    let handle = tokio::fs::File::open(&dir)
        .await
        .map_err(|source| io_error("opening the directory of a downloaded blob", &dir, source))?;
    handle
        .sync_all()
        .await
        .map_err(|source| io_error("syncing the directory of a downloaded blob", &dir, source))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A name in `dest`'s directory (same filesystem, so the rename is atomic) that no concurrent
/// download in this or another process uses.
fn temp_path_for(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "blob".to_string());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(dest).join(format!(".{name}.{}-{n}.partial", std::process::id()))
}

fn io_error(action: &str, path: &Path, source: io::Error) -> RegistryError {
    RegistryError::Io {
        action: action.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// The file as a stream of chunks, read as the upload consumes them.
fn file_chunks(
    file: tokio::fs::File,
) -> impl Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(UPLOAD_CHUNK);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((buf.freeze(), file)))
    })
}

/// Counts what is written and refuses more than `limit` bytes, so a registry that sends more
/// than the descriptor says cannot fill the disk.
struct LimitedWriter<'a, W> {
    inner: &'a mut W,
    written: u64,
    limit: u64,
    /// `written`, for the watchdog that fails a download that stops making progress.
    progress: &'a AtomicU64,
}

/// Ends once `progress` has not moved for `limit` (checked a few times per `limit`).
async fn stalled(progress: &AtomicU64, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut seen = progress.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for LimitedWriter<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.written + buf.len() as u64 > this.limit {
            this.written += buf.len() as u64;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the registry sent more bytes than the blob's descriptor says",
            )));
        }
        let poll = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.written += *n as u64;
            this.progress.store(this.written, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
