//! Registry credentials against a real `docker-registry` on 127.0.0.1: Basic auth (htpasswd)
//! with credentials from an auth file, the errors for missing, wrong and unreadable
//! credentials, and the bearer-token flow: against the registry's own `auth: token` mode with
//! a JWT token server, and through a token gate in front of the registry.

#[path = "support/auth.rs"]
mod auth_support;
#[path = "support/bearer.rs"]
mod bearer;
#[path = "support/image.rs"]
mod image_support;
#[path = "support/registry.rs"]
mod test_registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use auth_support::{htpasswd_auth, write_auth_file, write_file};
use bearer::{TokenGate, TokenPolicy, TokenServer};
use image_support::{store_blob, store_config};
use serde_json::json;
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use strata_registry::{
    push_image, AuthError, AuthSources, Credentials, ImageUpload, ManifestRef, PushOptions,
    Registry, RegistryError, RegistryRepo, RetryPolicy, Tag,
};
use test_registry::{TestRegistry, TestRegistryOptions};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse:battery";

/// A registry that wants `USER`/`PASSWORD` over Basic auth, and the directory for its files.
fn basic_registry() -> (TestRegistry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let auth = htpasswd_auth(dir.path(), USER, PASSWORD);
    let registry = TestRegistry::start_with_config(TestRegistryOptions::default(), &auth);
    (registry, dir)
}

/// No retries: auth failures must not be retried anyway, and a test that fails should fail
/// fast.
fn no_retry(registry: Registry) -> Registry {
    registry.with_retry_policy(RetryPolicy {
        attempts: 1,
        initial_backoff: Duration::from_millis(1),
    })
}

fn client_from(addr: &str, files: &[&Path]) -> Registry {
    no_retry(Registry::with_auth_sources(addr, false, &AuthSources::files(files.to_vec())).unwrap())
}

fn client_with(addr: &str, credentials: Credentials) -> Registry {
    no_retry(Registry::with_credentials(addr, false, credentials).unwrap())
}

/// `ADDR/team/env`, the repository the tests use.
fn team_env(addr: &str) -> RegistryRepo {
    format!("{addr}/team/env").parse().unwrap()
}

/// A registry behind a token gate that gives tokens as `policy` says.
fn gated_registry(policy: TokenPolicy) -> (TestRegistry, TokenGate) {
    let reg = TestRegistry::start();
    let gate = TokenGate::start(&reg.addr(), policy);
    (reg, gate)
}

/// Tokens for `USER`/`PASSWORD` only.
fn only_the_user() -> TokenPolicy {
    TokenPolicy::User {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

/// The error of listing the tags of `team/env` on `addr` with `credentials`.
async fn list_tags_error(addr: &str, credentials: Credentials) -> RegistryError {
    client_with(addr, credentials)
        .list_tags(&team_env(addr))
        .await
        .unwrap_err()
}

/// Without credentials, `addr` is refused as needing them: the registry really enforces auth.
async fn assert_anonymous_requires_credentials(addr: &str) {
    let err = list_tags_error(addr, Credentials::Anonymous).await;
    assert!(
        matches!(err, RegistryError::RequiresCredentials { .. }),
        "{err:?}"
    );
}

/// A small image: one layer of arbitrary bytes (the registry does not look inside), a config
/// and the manifest.
struct Image {
    manifest: Vec<u8>,
    digest: Digest,
    blobs: Vec<(BlobDescriptor, PathBuf)>,
}

impl Image {
    fn upload<'a>(&'a self, tag: &'a Tag) -> ImageUpload<'a> {
        ImageUpload {
            manifest: &self.manifest,
            manifest_digest: &self.digest,
            media_type: MEDIA_TYPE_MANIFEST,
            tag: Some(tag),
            blobs: &self.blobs,
        }
    }

    fn layer(&self) -> &(BlobDescriptor, PathBuf) {
        &self.blobs[0]
    }
}

fn image(dir: &Path, seed: &str) -> Image {
    let layer = store_blob(
        dir,
        MEDIA_TYPE_LAYER_GZIP,
        format!("layer bytes of {seed}").repeat(100).as_bytes(),
    );
    let config = store_config(
        dir,
        std::slice::from_ref(&layer.0.digest),
        json!({"Labels": {"seed": seed}}),
    );
    let manifest = image_support::manifest(&config.0, std::slice::from_ref(&layer), None);
    Image {
        digest: Digest::of(&manifest),
        manifest,
        blobs: vec![layer, config],
    }
}

/// Push, blob size and download, manifest HEAD and GET, tag list and delete: every kind of
/// call strata makes, so each must get through the registry's auth.
async fn exercise_every_call(registry: &Registry, addr: &str, work: &Path) {
    let repo = team_env(addr);
    let img = image(work, addr);
    let tag = "v1".parse::<Tag>().unwrap();
    let report = push_image(registry, &repo, &img.upload(&tag), &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(report.blobs_uploaded, 2, "{report:?}");
    let (layer, _) = img.layer();
    assert_eq!(
        registry.blob_size(&repo, &layer.digest).await.unwrap(),
        Some(layer.size)
    );
    assert!(registry.blob_exists(&repo, &layer.digest).await.unwrap());
    let dest = work.join("pulled-layer");
    registry
        .pull_blob_to_file(&repo, layer, &dest)
        .await
        .unwrap();
    assert_eq!(Digest::of(&std::fs::read(&dest).unwrap()), layer.digest);
    // A mount asks for two scopes at once (push on the target, pull on the source).
    let other: RegistryRepo = format!("{addr}/team/other").parse().unwrap();
    assert!(registry
        .mount_blob(&other, &repo, &layer.digest)
        .await
        .unwrap());
    assert!(registry.blob_exists(&other, &layer.digest).await.unwrap());
    let by_tag = ManifestRef::Tag(tag.clone());
    assert_eq!(
        registry.manifest_exists(&repo, &by_tag).await.unwrap(),
        Some(img.digest.clone())
    );
    let pulled = registry.pull_manifest(&repo, &by_tag).await.unwrap();
    assert_eq!(pulled.digest, img.digest);
    assert_eq!(
        registry.list_tags(&repo).await.unwrap(),
        vec!["v1".to_string()]
    );
    registry.delete_manifest(&repo, &img.digest).await.unwrap();
    assert_eq!(
        registry.manifest_exists(&repo, &by_tag).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_from_an_auth_file_serve_every_call() {
    let (reg, dir) = basic_registry();
    let addr = reg.addr();
    // Docker's URL-style key, as `docker login` writes it, must be understood too.
    let auth = write_file(
        dir.path(),
        "config.json",
        &format!(
            r#"{{"auths": {{"http://{addr}/v1/": {{"auth": "{}"}}}}}}"#,
            auth_support::auth_field(USER, PASSWORD)
        ),
    );
    let registry = client_from(&addr, &[&dir.path().join("missing.json"), &auth]);
    assert_eq!(registry.credentials().username(), Some(USER));
    exercise_every_call(&registry, &addr, dir.path()).await;
    assert_anonymous_requires_credentials(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_naming_the_user_and_the_file() {
    let (reg, dir) = basic_registry();
    let addr = reg.addr();
    let auth = write_auth_file(dir.path(), "auth.json", &addr, USER, "wrong-password");
    let registry = client_from(&addr, &[&auth]);
    let repo = team_env(&addr);
    let img = image(dir.path(), "wrong");
    // A tag list, a blob HEAD and a whole push.
    let tags = registry.list_tags(&repo).await.unwrap_err();
    let head = registry
        .blob_exists(&repo, &img.layer().0.digest)
        .await
        .unwrap_err();
    let tag = "v1".parse::<Tag>().unwrap();
    let push = push_image(&registry, &repo, &img.upload(&tag), &PushOptions::default())
        .await
        .unwrap_err();
    for err in [tags, head, push] {
        let text = err.to_string();
        assert!(
            matches!(err, RegistryError::CredentialsRefused(_)),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert!(
            text.contains(&format!(
                "registry {addr} refused the credentials of user {USER} (from {})",
                auth.display()
            )),
            "{text}"
        );
        assert!(!text.contains("wrong-password"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_names_the_files_searched_and_how_to_log_in() {
    let (reg, dir) = basic_registry();
    let addr = reg.addr();
    // Credentials for another registry only.
    let other = write_auth_file(
        dir.path(),
        "auth.json",
        "other.example:5000",
        USER,
        PASSWORD,
    );
    let missing = dir.path().join("config.json");
    let registry = client_from(&addr, &[&other, &missing]);
    let repo = team_env(&addr);
    let raw = registry
        .manifest_exists(&repo, &ManifestRef::Tag("v1".parse::<Tag>().unwrap()))
        .await
        .unwrap_err();
    let img = image(dir.path(), "anon");
    let oci = registry
        .blob_exists(&repo, &img.layer().0.digest)
        .await
        .unwrap_err();
    for err in [raw, oci] {
        let text = err.to_string();
        assert!(
            matches!(err, RegistryError::RequiresCredentials { .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());
        let expected = format!(
            "registry {addr} requires credentials: none found in {}, {} (`skopeo login {addr}` or `docker login {addr}` writes them)",
            other.display(),
            missing.display()
        );
        assert!(text.contains(&expected), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_auth_file_stops_the_client_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "auth.json",
        r#"{"auths": {"127.0.0.1:5000": {"auth": 7}}}"#,
    );
    let err = Registry::with_auth_sources("127.0.0.1:5000", false, &AuthSources::files([&bad]))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::Auth(AuthError::Malformed { .. })),
        "{err:?}"
    );
    assert!(
        text.contains(&format!("malformed registry auth file {}", bad.display())),
        "{text}"
    );
}

/// Set in the child process of the test below, which then runs only the check.
const CHILD_ADDR_VAR: &str = "STRATA_AUTH_TEST_REGISTRY";

/// `Registry::new` (what the CLI and the builder call) finds the file `REGISTRY_AUTH_FILE`
/// names. Environment variables are process-wide and tests run in parallel threads, so the
/// check runs in a child process of this test binary with its own environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_new_reads_the_file_registry_auth_file_names() {
    if let Ok(addr) = std::env::var(CHILD_ADDR_VAR) {
        let registry = Registry::new(&addr, false).unwrap();
        let repo = team_env(&addr);
        // Display, not Debug: the parent checks the message users see.
        let tags = registry
            .list_tags(&repo)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tags, Vec::<String>::new());
        return;
    }
    let (reg, dir) = basic_registry();
    let auth = write_auth_file(dir.path(), "auth.json", &reg.addr(), USER, PASSWORD);
    let home = tempfile::tempdir().unwrap();
    let run_child = |auth_file: Option<&Path>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "registry_new_reads_the_file_registry_auth_file_names",
            "--nocapture",
        ])
        .env(CHILD_ADDR_VAR, reg.addr())
        .env("HOME", home.path())
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE");
        if let Some(file) = auth_file {
            cmd.env("REGISTRY_AUTH_FILE", file);
        }
        cmd.output().unwrap()
    };
    let with_file = run_child(Some(&auth));
    assert!(
        with_file.status.success(),
        "child with REGISTRY_AUTH_FILE failed: {}{}",
        String::from_utf8_lossy(&with_file.stdout),
        String::from_utf8_lossy(&with_file.stderr)
    );
    // Without it the same child fails, and says where it looked: the check can fail.
    let without = run_child(None);
    // The child's panic message goes to its stderr.
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&without.stdout),
        String::from_utf8_lossy(&without.stderr)
    );
    assert!(!without.status.success(), "{output}");
    assert!(output.contains("requires credentials"), "{output}");
    assert!(output.contains(".docker/config.json"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_fetched_with_the_credentials_and_reused_per_scope() {
    let (_reg, gate) = gated_registry(only_the_user());
    let addr = gate.addr();
    let dir = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path(), "auth.json", &addr, USER, PASSWORD);
    let registry = client_from(&addr, &[&auth]);
    exercise_every_call(&registry, &addr, dir.path()).await;
    let scopes = gate.asked_scopes();
    for wanted in [
        "repository:team/env:pull",
        "repository:team/env:pull,push",
        "repository:team/env:delete",
    ] {
        assert!(
            scopes.iter().any(|s| s == wanted),
            "{wanted} not in {scopes:?}"
        );
    }
    // Cached tokens are reused: more tags listings fetch no new token.
    let repo = team_env(&addr);
    let issued = gate.tokens_issued();
    for _ in 0..3 {
        registry.list_tags(&repo).await.unwrap();
    }
    assert_eq!(gate.tokens_issued(), issued);
    // A token the registry stops accepting (expired, revoked) is replaced once.
    gate.revoke_all();
    registry.list_tags(&repo).await.unwrap();
    assert_eq!(gate.tokens_issued(), issued + 1);
    assert_eq!(gate.tokens_refused(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_with_a_wrong_password_is_refused_by_the_token_server() {
    let (_reg, gate) = gated_registry(only_the_user());
    let addr = gate.addr();
    let err = list_tags_error(&addr, Credentials::basic(USER, "nope")).await;
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::CredentialsRefused(_)),
        "{err:?}"
    );
    assert!(
        text.contains(&format!("user {USER} (given by the caller)")),
        "{text}"
    );
    assert!(text.contains("getting a token from"), "{text}");
    assert!(gate.tokens_refused() >= 1);
    // Anonymous: the token server turns it down too, and the error says to log in.
    assert_anonymous_requires_credentials(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens_serve_a_public_registry() {
    let (_reg, gate) = gated_registry(TokenPolicy::Anyone);
    let addr = gate.addr();
    let dir = tempfile::tempdir().unwrap();
    let registry = client_from(&addr, &[&dir.path().join("none.json")]);
    assert_eq!(registry.credentials(), &Credentials::Anonymous);
    exercise_every_call(&registry, &addr, dir.path()).await;
    assert!(gate.tokens_issued() >= 3, "{}", gate.tokens_issued());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_registry_serves_every_call_with_tokens_from_its_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), USER, PASSWORD);
    let reg =
        TestRegistry::start_with_config(TestRegistryOptions::default(), &tokens.registry_config());
    let addr = reg.addr();
    let auth = write_auth_file(dir.path(), "auth.json", &addr, USER, PASSWORD);
    let registry = client_from(&addr, &[&auth]);
    exercise_every_call(&registry, &addr, dir.path()).await;
    // Pull, push and delete scopes at least.
    assert!(tokens.tokens_issued() >= 3, "{}", tokens.tokens_issued());
    assert_eq!(tokens.tokens_refused(), 0);
    let err = list_tags_error(&addr, Credentials::basic(USER, "nope")).await;
    assert!(
        matches!(err, RegistryError::CredentialsRefused(_)),
        "{err:?}"
    );
    assert_anonymous_requires_credentials(&addr).await;
}
