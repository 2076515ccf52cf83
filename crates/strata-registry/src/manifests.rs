//! Manifest, tag and delete calls.

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LINK};
use reqwest::StatusCode;

use crate::client::{read_up_to, Registry};
use crate::error::RegistryError;
use crate::reference::{ManifestRef, RegistryRepo};
use crate::token::Access;
use strata_oci::{Digest, DigestParseError};
use strata_oci::{MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const DIGEST_HEADER: &str = "Docker-Content-Digest";
/// The distribution spec lets registries refuse manifests above 4 MiB; so do we when pulling.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Bounds a registry that keeps sending `Link: rel="next"`.
const MAX_TAG_PAGES: usize = 10_000;
/// All the tag names of a repository together, as held in memory: 64 MiB is some 400,000
/// tags of 128 characters.
const MAX_TAG_LIST_BYTES: usize = 64 * 1024 * 1024;

/// A manifest as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

impl Registry {
    /// The digest of the manifest `reference` names, or `None` if the registry does not have
    /// it (HEAD).
    pub async fn manifest_exists(
        &self,
        repo: &RegistryRepo,
        reference: &ManifestRef,
    ) -> Result<Option<Digest>, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("checking for manifest {}", describe(repo, reference));
        let url = self.url(repo, &format!("manifests/{reference}"));
        let head = self
            .with_retry(&action, || async {
                let response = self
                    .send_authorized(&action, repo, Access::Pull, || {
                        self.http.head(&url).header(ACCEPT, accept_manifests())
                    })
                    .await?;
                match response.status() {
                    StatusCode::NOT_FOUND => Ok(None),
                    s if s.is_success() => Ok(Some(header_digest(response.headers()))),
                    _ => Err(self.status_error(&action, response).await),
                }
            })
            .await?;
        match head {
            None => Ok(None),
            Some(Some(Ok(digest))) => Ok(Some(digest)),
            Some(Some(Err(source))) => Err(RegistryError::BadDigestHeader {
                registry: self.host().to_string(),
                action,
                source,
            }),
            // No digest header: a digest reference names itself, a tag needs the bytes.
            Some(None) => match reference {
                ManifestRef::Digest(d) => Ok(Some(d.clone())),
                ManifestRef::Tag(_) => Ok(Some(self.pull_manifest(repo, reference).await?.digest)),
            },
        }
    }

    /// Fetches a manifest; when `reference` is a digest the bytes must hash to it.
    pub async fn pull_manifest(
        &self,
        repo: &RegistryRepo,
        reference: &ManifestRef,
    ) -> Result<PulledManifest, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("pulling manifest {}", describe(repo, reference));
        let url = self.url(repo, &format!("manifests/{reference}"));
        let (headers, bytes) = self
            .with_retry(&action, || async {
                let response = self
                    .send_authorized(&action, repo, Access::Pull, || {
                        self.http.get(&url).header(ACCEPT, accept_manifests())
                    })
                    .await?;
                if !response.status().is_success() {
                    return Err(self.status_error(&action, response).await);
                }
                let headers = response.headers().clone();
                let bytes = self
                    .read_limited(&action, response, MAX_MANIFEST_BYTES)
                    .await?;
                Ok((headers, bytes))
            })
            .await?;
        let digest = Digest::of(&bytes);
        let what = format!("manifest {}", describe(repo, reference));
        if let Some(expected) = reference.digest() {
            self.check_digest(&what, expected, &digest)?;
        }
        // A tag pull cannot be checked against the reference, but the registry vouched for a
        // digest: the bytes must match it.
        if let Some(Ok(announced)) = header_digest(&headers) {
            self.check_digest(&what, &announced, &digest)?;
        }
        let media_type = media_type_of(&headers, &bytes).ok_or_else(|| {
            self.protocol_error(&action, "no Content-Type and no mediaType in the manifest")
        })?;
        Ok(PulledManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// Uploads a manifest under a tag or its digest; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &RegistryRepo,
        reference: &ManifestRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        self.check_repo(repo)?;
        let digest = Digest::of(bytes);
        let what = format!("manifest to push as {}", describe(repo, reference));
        if let Some(expected) = reference.digest() {
            self.check_digest(&what, expected, &digest)?;
        }
        let action = format!("pushing manifest {}", describe(repo, reference));
        let url = self.url(repo, &format!("manifests/{reference}"));
        let headers = self
            .with_retry(&action, || async {
                let request = || {
                    self.http
                        .put(&url)
                        .header(CONTENT_TYPE, media_type)
                        .body(bytes.to_vec())
                };
                let response = self
                    .send_authorized(&action, repo, Access::Push, request)
                    .await?;
                if !response.status().is_success() {
                    return Err(self.status_error(&action, response).await);
                }
                Ok(response.headers().clone())
            })
            .await?;
        if let Some(Ok(stored)) = header_digest(&headers) {
            self.check_digest(&what, &digest, &stored)?;
        }
        Ok(digest)
    }

    /// Deletes a manifest by digest; the registry drops every tag that points at it.
    pub async fn delete_manifest(
        &self,
        repo: &RegistryRepo,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.check_repo(repo)?;
        let action = format!("deleting manifest {repo}@{digest}");
        let url = self.url(repo, &format!("manifests/{digest}"));
        self.with_retry(&action, || async {
            let response = self
                .send_authorized(&action, repo, Access::Delete, || self.http.delete(&url))
                .await?;
            match response.status() {
                s if s.is_success() => Ok(()),
                StatusCode::METHOD_NOT_ALLOWED => Err(RegistryError::DeletesDisabled {
                    registry: self.host().to_string(),
                    repo: repo.to_string(),
                    digest: digest.clone(),
                }),
                _ => Err(self.status_error(&action, response).await),
            }
        })
        .await
    }

    /// All tags of `repo`, following `Link: rel="next"` pages. A repository the registry does
    /// not know (`NAME_UNKNOWN`) has no tags.
    pub async fn list_tags(&self, repo: &RegistryRepo) -> Result<Vec<String>, RegistryError> {
        self.check_repo(repo)?;
        let action = format!("listing tags of {repo}");
        let mut tags = Vec::new();
        let mut next = Some(self.url(repo, "tags/list"));
        let mut pages = 0;
        let mut tag_bytes = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_TAG_PAGES {
                return Err(self
                    .protocol_error(&action, format!("more than {MAX_TAG_PAGES} pages of tags")));
            }
            let page = self
                .with_retry(&action, || self.tag_page(&action, repo, &url))
                .await;
            let (page_tags, link) = match page {
                Err(e) if e.registry_code() == Some("NAME_UNKNOWN") => return Ok(Vec::new()),
                other => other?,
            };
            // What the tags hold in memory, an empty one included.
            tag_bytes += page_tags
                .iter()
                .map(|t| t.len() + std::mem::size_of::<String>())
                .sum::<usize>();
            if tag_bytes > MAX_TAG_LIST_BYTES {
                return Err(self.protocol_error(
                    &action,
                    format!("tag names past {MAX_TAG_LIST_BYTES} bytes"),
                ));
            }
            tags.extend(page_tags);
            next = link.map(|l| self.resolve_link(&action, &l)).transpose()?;
        }
        Ok(tags)
    }

    async fn tag_page(
        &self,
        action: &str,
        repo: &RegistryRepo,
        url: &str,
    ) -> Result<(Vec<String>, Option<String>), RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let response = self
            .send_authorized(action, repo, Access::Pull, || self.http.get(url))
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(action, response).await);
        }
        let link = next_link(response.headers());
        let body = self
            .read_limited(action, response, MAX_MANIFEST_BYTES)
            .await?;
        let list: TagList = serde_json::from_slice(&body)
            .map_err(|e| self.protocol_error(action, format!("bad tag list: {e}")))?;
        Ok((list.tags.unwrap_or_default(), link))
    }

    /// The next page's URL: `Link` targets are a path on the registry, resolved against it
    /// as a browser would. One that leads to another origin (scheme, host, port) or carries
    /// a user name is refused: the request would carry this registry's credentials there.
    fn resolve_link(&self, action: &str, link: &str) -> Result<String, RegistryError> {
        let base = format!("{}://{}/", self.scheme().as_str(), self.host());
        let bad = |why: String| self.protocol_error(action, format!("next page {link:?}: {why}"));
        let base = reqwest::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        let url = base.join(link).map_err(|e| bad(e.to_string()))?;
        if url.origin() != base.origin() || !url.username().is_empty() || url.password().is_some() {
            return Err(bad(format!(
                "it leads away from {}, and the request would carry its credentials",
                self.host()
            )));
        }
        Ok(url.to_string())
    }

    fn check_digest(
        &self,
        what: &str,
        expected: &Digest,
        actual: &Digest,
    ) -> Result<(), RegistryError> {
        if expected == actual {
            return Ok(());
        }
        Err(RegistryError::DigestMismatch {
            registry: self.host().to_string(),
            what: what.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }

    /// Reads a body, refusing more than `limit` bytes.
    pub(crate) async fn read_limited(
        &self,
        action: &str,
        response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        let more = read_up_to(response, limit, &mut body)
            .await
            .map_err(|e| self.transport_error(action, &e, e.is_connect()))?;
        if more {
            return Err(self.protocol_error(action, format!("answer larger than {limit} bytes")));
        }
        Ok(body)
    }
}

fn describe(repo: &RegistryRepo, reference: &ManifestRef) -> String {
    match reference {
        ManifestRef::Tag(t) => format!("{repo}:{t}"),
        ManifestRef::Digest(d) => format!("{repo}@{d}"),
    }
}

fn accept_manifests() -> String {
    [
        MEDIA_TYPE_MANIFEST,
        MEDIA_TYPE_INDEX,
        MEDIA_TYPE_DOCKER_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

/// `None`: no header; `Some(Err(_))`: a header that is not a sha256 digest.
fn header_digest(headers: &HeaderMap) -> Option<Result<Digest, DigestParseError>> {
    let value = headers.get(DIGEST_HEADER)?;
    Some(String::from_utf8_lossy(value.as_bytes()).trim().parse())
}

/// The Content-Type without parameters, else the manifest's own `mediaType` field.
fn media_type_of(headers: &HeaderMap, bytes: &[u8]) -> Option<String> {
    let from_header = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| !v.is_empty() && v != "application/json" && v != "application/octet-stream");
    if from_header.is_some() {
        return from_header;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("mediaType")?.as_str().map(str::to_string)
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(LINK)?.to_str().ok()?;
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        Some(target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn digest_header_is_parsed_or_rejected_with_its_value() {
        let mut h = HeaderMap::new();
        assert_eq!(header_digest(&h), None);
        let d = Digest::of(b"m");
        h.insert(
            DIGEST_HEADER,
            HeaderValue::from_str(&format!(" {d} ")).unwrap(),
        );
        assert_eq!(header_digest(&h), Some(Ok(d)));
        h.insert(DIGEST_HEADER, HeaderValue::from_static("md5:00"));
        assert_eq!(
            header_digest(&h),
            Some(Err(DigestParseError {
                input: "md5:00".into()
            }))
        );
    }

    #[test]
    fn next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static("</v2/a/tags/list?last=x&n=2>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=x&n=2"));
        h.insert(LINK, HeaderValue::from_static("</x>; rel=\"prev\""));
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn media_type_prefers_header_then_body() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE_MANIFEST));
        assert_eq!(
            media_type_of(&h, b"{}").as_deref(),
            Some(MEDIA_TYPE_MANIFEST)
        );
        let body = format!(r#"{{"mediaType":"{MEDIA_TYPE_INDEX}"}}"#);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(
            media_type_of(&h, body.as_bytes()).as_deref(),
            Some(MEDIA_TYPE_INDEX)
        );
        assert_eq!(media_type_of(&HeaderMap::new(), b"{}"), None);
    }
}
