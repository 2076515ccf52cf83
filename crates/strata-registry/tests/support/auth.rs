//! Test support for registries that want credentials: the htpasswd file and configuration
//! that turn on docker-registry's Basic auth, and auth files as `skopeo login` and
//! `docker login` write them.
//!
//! Needs the `bcrypt` and `base64` crates (docker-registry reads bcrypt hashes only).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine;

/// bcrypt's lowest cost: the tests need a valid hash, not a strong one.
const TEST_BCRYPT_COST: u32 = 4;

/// Writes an htpasswd file with one user and returns the registry configuration section that
/// uses it (append it with `TestRegistry::start_with_config`).
pub fn htpasswd_auth(dir: &Path, user: &str, password: &str) -> String {
    let hash = bcrypt::hash(password, TEST_BCRYPT_COST)
        .unwrap_or_else(|e| panic!("bcrypt hash for {user}: {e}"));
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{user}:{hash}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    format!(
        "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
        path.display()
    )
}

/// `base64("user:password")`, the `auth` field of an auth file entry.
pub fn auth_field(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Writes a containers-auth.json file (what `skopeo login --authfile PATH` writes) with one
/// entry for `host` and returns its path.
pub fn write_auth_file(dir: &Path, name: &str, host: &str, user: &str, password: &str) -> PathBuf {
    let text = format!(
        r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
        auth_field(user, password)
    );
    write_file(dir, name, &text)
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
