//! Blob calls: existence and size, cross-repository mount, streamed upload from a file and
//! verified, streamed download to a file. Layers can be gigabytes: nothing here holds a blob
//! in memory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::{Registry, Wait};
use crate::error::RegistryError;
use crate::reference::RegistryRepo;
use crate::token::Access;
use strata_oci::{BlobDescriptor, Digest, HashingWriter};

/// Read size of upload streams: big enough for few syscalls, small enough to not matter.
const UPLOAD_CHUNK: usize = 256 * 1024;

impl Registry {
    /// Whether `repo` has the blob (HEAD).
    pub async fn blob_exists(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let action = format!("checking for blob {digest} in {}", repo.repository);
        Ok(self.head_blob(repo, digest, &action).await?.is_some())
    }

    /// The size the registry holds for the blob (HEAD's `Content-Length`), or `None` if `repo`
    /// lacks it. Unlike [`Registry::blob_exists`] this can tell a blob that landed whole.
    pub async fn blob_size(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let action = format!("checking the size of blob {digest} in {}", repo.repository);
        match self.head_blob(repo, digest, &action).await? {
            Some(response) => self.content_length(&action, &response).map(Some),
            None => Ok(None),
        }
    }

    /// The registry's answer to a HEAD of the blob; `None` when `repo` lacks it.
    async fn head_blob(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
        action: &str,
    ) -> Result<Option<reqwest::Response>, RegistryError> {
        self.check_repo(repo)?;
        let url = self.url(repo, &format!("blobs/{digest}"));
        self.with_retry(action, || async {
            let response = self
                .send_authorized(action, repo, Access::Pull, || self.http.head(&url))
                .await?;
            match response.status() {
                StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => Ok(Some(response)),
                _ => Err(self.status_error(action, response).await),
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
        let mut url = self.parsed_url(repo, "blobs/uploads/", &action)?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &from.repository);
        self.with_retry(&action, || async {
            let response = self
                .send_authorized(&action, repo, Access::Push, || {
                    self.http.post(url.clone()).header(CONTENT_LENGTH, 0)
                })
                .await?;
            match response.status() {
                StatusCode::CREATED => Ok(true),
                // An upload the registry opened instead: left to expire, as the caller
                // uploads in one of its own.
                StatusCode::ACCEPTED => {
                    tracing::debug!(%digest, %repo, "mount declined, will upload");
                    Ok(false)
                }
                // Not allowed to read `from` (another team's repository, a robot account
                // without pull there): an upload does without it.
                s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => {
                    tracing::debug!(%digest, %repo, %from, status = %s, "mount refused, will upload");
                    Ok(false)
                }
                _ => Err(self.status_error(&action, response).await),
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
        self.with_retry(&action, || async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|source| io_error("opening a blob to upload", path, source))?;
            let body = reqwest::Body::wrap_stream(file_chunks(file));
            self.upload(repo, &blob.digest, blob.size, body, &action)
                .await
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
        let size = bytes.len() as u64;
        self.with_retry(&action, || async {
            let body = reqwest::Body::from(Bytes::copy_from_slice(bytes));
            self.upload(repo, &digest, size, body, &action).await
        })
        .await?;
        Ok(digest)
    }

    /// Uploads `bytes` unless `repo` has them; how many bytes it uploaded.
    pub(crate) async fn ensure_blob(
        &self,
        repo: &RegistryRepo,
        bytes: &[u8],
    ) -> Result<u64, RegistryError> {
        if self.blob_exists(repo, &Digest::of(bytes)).await? {
            return Ok(0);
        }
        self.push_blob_bytes(repo, bytes).await?;
        Ok(bytes.len() as u64)
    }

    /// One monolithic upload: a POST opens it, one PUT of `body` (`size` bytes) closes it
    /// with the digest. The PUT goes where the registry's `Location` says, with the
    /// credentials only when that is the registry itself (a storage service's signed URL
    /// carries its own).
    async fn upload(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
        action: &str,
    ) -> Result<(), RegistryError> {
        let url = self.parsed_url(repo, "blobs/uploads/", action)?;
        let (opened, authorization) = self
            .send_authorized_with(Wait::Whole, action, repo, Access::Push, || {
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if opened.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(action, opened).await);
        }
        let location = opened
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol_error(action, "no Location for the upload it opened"))?;
        // Relative to where the POST ended up (after any redirect).
        let mut target = opened.url().join(location).map_err(|e| {
            self.protocol_error(action, format!("bad upload Location {location:?}: {e}"))
        })?;
        target
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let own = self.is_own_origin(&target);
        let mut put = self
            .http
            .put(target.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        // The same credentials as the POST (a cached token could expire in between).
        if let (true, Some(value)) = (own, authorization) {
            put = put.header(AUTHORIZATION, value);
        }
        let closed = self.send(action, put).await?;
        if closed.status().is_success() {
            return Ok(());
        }
        if own {
            return Err(self.status_error(action, closed).await);
        }
        // Another host's refusal is not about the registry's credentials (none were sent).
        let action = format!("{action} (to {})", target.origin().ascii_serialization());
        Err(self.answer_error(&action, closed).await)
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
        let (action, what) = (&action, &what);
        self.with_retry(action, || async move {
            let mut bytes = Vec::new();
            self.pull_limited(repo, blob, &mut bytes, action, what, |source| {
                io_error("keeping a downloaded blob in memory", Path::new(""), source)
            })
            .await?;
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

    /// Pulls `blob` into `sink`, refusing more bytes than its descriptor says and bytes that
    /// are not the blob (its digest is checked as they come; the registry's
    /// `Docker-Content-Digest` header is not needed). The answer's head must come within the
    /// stall timeout, and each part of the body within it after the last. `write_error` names
    /// a failed write.
    async fn pull_limited<W: AsyncWrite + Unpin>(
        &self,
        repo: &RegistryRepo,
        blob: &BlobDescriptor,
        sink: &mut W,
        action: &str,
        what: &str,
        write_error: impl FnOnce(io::Error) -> RegistryError,
    ) -> Result<(), RegistryError> {
        let url = self.url(repo, &format!("blobs/{}", blob.digest));
        let (response, _) = self
            .send_authorized_with(Wait::Head, action, repo, Access::Pull, || {
                self.http.get(&url)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(action, response).await);
        }
        let mut body = response.bytes_stream();
        let mut hasher = HashingWriter::new(io::sink());
        loop {
            let chunk = match tokio::time::timeout(self.stall, body.next()).await {
                Err(_) => return Err(self.stalled(action)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(self.transport_error(action, &e, false)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            hasher.hash_only(&chunk);
            // Past the descriptor's size, the registry is wrong: nothing more is kept.
            if hasher.count() > blob.size {
                return Err(RegistryError::SizeMismatch {
                    what: what.to_string(),
                    expected: blob.size,
                    actual: hasher.count(),
                });
            }
            if let Err(e) = sink.write_all(&chunk).await {
                return Err(write_error(e));
            }
        }
        if let Err(e) = sink.flush().await {
            return Err(write_error(e));
        }
        let (actual, written, _) = hasher.finish();
        if actual != blob.digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.host().to_string(),
                what: what.to_string(),
                expected: blob.digest.clone(),
                actual,
            });
        }
        // The digest matched, so a short blob means the descriptor's size is wrong.
        if written != blob.size {
            return Err(RegistryError::SizeMismatch {
                what: what.to_string(),
                expected: blob.size,
                actual: written,
            });
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
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(UPLOAD_CHUNK);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((buf.freeze(), file)))
    })
}
