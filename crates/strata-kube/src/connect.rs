//! Reaching the cluster. The kubeconfig is found and read as kubectl does, by kube's own
//! reader: the configured file; else every file of `$KUBECONFIG` (a list separated like
//! `$PATH`), merged with the first file to set a value winning; else `~/.kube/config`.
//! The context is the configured one, else the merged files' `current-context`. The client
//! is checked by asking the server for its version, so a kubeconfig that does not work
//! fails at start, naming the files, the context and the server.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::Client;

use crate::backend::KubeError;
use crate::config::Connection;
use strata_errors::chain;

/// A client configuration and where it came from (for errors).
pub struct Resolved {
    pub config: kube::Config,
    /// E.g. `kubeconfig /a:/b, context prod`.
    pub source: String,
}

/// A client for the configured cluster, checked by asking the server for its version.
pub async fn connect(connection: &Connection) -> Result<Client, KubeError> {
    let resolved = match connection {
        Connection::InCluster => Resolved {
            config: kube::Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?,
            source: "the in-cluster ServiceAccount".to_string(),
        },
        Connection::Kubeconfig { path, context } => {
            let files = kubeconfig_files(path.as_deref())?;
            from_kubeconfig(&files, context.as_deref()).await?
        }
    };
    connect_to(resolved).await
}

/// A client for a resolved configuration, checked by asking the server for its version.
pub async fn connect_to(resolved: Resolved) -> Result<Client, KubeError> {
    install_crypto_provider();
    let Resolved { config, source } = resolved;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| KubeError::Kubeconfig {
        path: source.clone(),
        detail: format!("cannot build a client: {e}"),
    })?;
    match client.apiserver_version().await {
        Ok(_) => Ok(client),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(KubeError::Unauthorized {
            server,
            source_desc: source,
            detail: status.message.clone(),
        }),
        Err(e) => Err(KubeError::Unreachable {
            server,
            source_desc: source,
            detail: chain(&e),
        }),
    }
}

/// rustls needs one process-wide crypto provider and strata compiles in only `ring` (no
/// second TLS backend): install it unless another part of the process already did.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The kubeconfig files to read, from this process's `$KUBECONFIG` and `$HOME` when
/// `configured` is `None` (see [`files_from`]).
pub fn kubeconfig_files(configured: Option<&Path>) -> Result<Vec<PathBuf>, KubeError> {
    let env = std::env::var_os("KUBECONFIG");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    files_from(configured, env.as_deref(), home.as_deref())
}

/// The kubeconfig files to read, in order: the configured file; else each file of
/// `kubeconfig_env` (separated like `$PATH`, empty entries ignored, as kubectl does); else
/// `home/.kube/config`.
pub fn files_from(
    configured: Option<&Path>,
    kubeconfig_env: Option<&OsStr>,
    home: Option<&Path>,
) -> Result<Vec<PathBuf>, KubeError> {
    if let Some(path) = configured {
        return Ok(vec![path.to_path_buf()]);
    }
    let listed: Vec<PathBuf> = kubeconfig_env
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return Ok(listed);
    }
    let home = home.ok_or_else(|| KubeError::Kubeconfig {
        path: "~/.kube/config".into(),
        detail: "no kubeconfig given, $KUBECONFIG is unset and $HOME is unknown".into(),
    })?;
    Ok(vec![home.join(".kube").join("config")])
}

/// Reads each file with kube's reader (relative certificate and token paths are taken from
/// the file's directory) and merges them in order (the first file to set a value wins).
pub fn read_kubeconfig(files: &[PathBuf]) -> Result<Kubeconfig, KubeError> {
    files
        .iter()
        .try_fold(Kubeconfig::default(), |merged, file| {
            let file_error = |detail: String| KubeError::Kubeconfig {
                path: file.display().to_string(),
                detail,
            };
            let next = Kubeconfig::read_from(file).map_err(|e| file_error(read_detail(e)))?;
            merged
                .merge(next)
                .map_err(|e| file_error(format!("cannot be merged with the files before it: {e}")))
        })
}

fn read_detail(error: KubeconfigError) -> String {
    match error {
        // kube's message repeats the path, which the error names already.
        KubeconfigError::ReadConfig(io, _) => format!("cannot read it: {io}"),
        KubeconfigError::Parse(e) => format!("not a valid kubeconfig: {e}"),
        other => other.to_string(),
    }
}

/// The client configuration of `context` (else the files' `current-context`) in these
/// kubeconfig files, merged.
pub async fn from_kubeconfig(
    files: &[PathBuf],
    context: Option<&str>,
) -> Result<Resolved, KubeError> {
    let kubeconfig = read_kubeconfig(files)?;
    let described = describe(files);
    let chosen = context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or_else(|| KubeError::Kubeconfig {
            path: described.clone(),
            detail: "no `current-context` is set: name one with `kubernetes.context`".into(),
        })?;
    if !kubeconfig.contexts.iter().any(|c| c.name == chosen) {
        return Err(KubeError::NoContext {
            files: described,
            context: chosen,
            known: known_contexts(&kubeconfig),
        });
    }
    let options = KubeConfigOptions {
        context: Some(chosen.clone()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| KubeError::Kubeconfig {
            path: described.clone(),
            detail: format!("context `{chosen}`: {e}"),
        })?;
    Ok(Resolved {
        config,
        source: format!("kubeconfig {described}, context {chosen}"),
    })
}

fn known_contexts(kubeconfig: &Kubeconfig) -> String {
    if kubeconfig.contexts.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    names.join(", ")
}

/// The files as `$KUBECONFIG` would list them.
fn describe(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTERS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: far\n  cluster:\n    server: https://far.example:6443\n- name: near\n  cluster:\n    server: https://near.example:6443\nusers:\n- name: ana\n  user:\n    token: t0k3n\n";
    const CONTEXTS: &str = "apiVersion: v1\nkind: Config\ncontexts:\n- name: far\n  context:\n    cluster: far\n    user: ana\n- name: near\n  context:\n    cluster: near\n    user: ana\n    namespace: team\ncurrent-context: far\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn kubeconfig_is_a_list_of_files_and_the_configured_file_wins() {
        let env = OsStr::new("/a/one::/b/two");
        let home = Path::new("/home/ana");
        let files = files_from(None, Some(env), Some(home)).unwrap();
        assert_eq!(files, [PathBuf::from("/a/one"), PathBuf::from("/b/two")]);
        let files = files_from(Some(Path::new("/etc/kc")), Some(env), Some(home)).unwrap();
        assert_eq!(files, [PathBuf::from("/etc/kc")]);
        let files = files_from(None, Some(OsStr::new("")), Some(home)).unwrap();
        assert_eq!(files, [PathBuf::from("/home/ana/.kube/config")]);
        assert!(files_from(None, None, None).is_err());
    }

    #[tokio::test]
    async fn two_files_each_holding_part_of_the_config_resolve_together() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", CLUSTERS);
        let b = write(dir.path(), "b", CONTEXTS);
        let env = std::env::join_paths([&a, &b]).unwrap();
        let files = files_from(None, Some(&env), None).unwrap();

        // `a` has no context at all: the current one and the named one are `b`'s.
        let current = from_kubeconfig(&files, None).await.unwrap();
        assert_eq!(current.config.cluster_url.host(), Some("far.example"));
        assert!(
            current.source.ends_with("context far"),
            "{}",
            current.source
        );
        let near = from_kubeconfig(&files, Some("near")).await.unwrap();
        assert_eq!(near.config.cluster_url.host(), Some("near.example"));
        assert_eq!(near.config.default_namespace, "team");

        // Either file alone does not resolve.
        let err = from_kubeconfig(&files[..1], Some("near"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, KubeError::NoContext { .. }), "{err}");
        let err = from_kubeconfig(&files[1..], None).await.err().unwrap();
        assert!(err.to_string().contains("context `far`"), "{err}");
    }

    #[tokio::test]
    async fn the_first_file_to_set_a_value_wins() {
        let dir = tempfile::tempdir().unwrap();
        let own = "apiVersion: v1\nkind: Config\nclusters:\n- name: far\n  cluster:\n    server: https://mine.example:6443\ncurrent-context: near\n";
        let a = write(dir.path(), "a", own);
        let b = write(dir.path(), "b", CLUSTERS);
        let c = write(dir.path(), "c", CONTEXTS);
        let files = [a, b, c];
        let near = from_kubeconfig(&files, None).await.unwrap();
        assert_eq!(near.config.cluster_url.host(), Some("near.example"));
        let far = from_kubeconfig(&files, Some("far")).await.unwrap();
        assert_eq!(far.config.cluster_url.host(), Some("mine.example"));
    }

    #[tokio::test]
    async fn errors_name_the_file_and_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good", CONTEXTS);
        let bad = write(dir.path(), "bad", "clusters: [[[");
        let missing = dir.path().join("missing");

        let err = read_kubeconfig(&[good.clone(), bad.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(err.contains("not a valid kubeconfig"), "{err}");
        let err = read_kubeconfig(&[good.clone(), missing.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("cannot read it"), "{err}");

        let err = from_kubeconfig(std::slice::from_ref(&good), Some("prod"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`prod`"), "{err}");
        assert!(err.contains(&good.display().to_string()), "{err}");
        assert!(err.contains("far, near"), "the contexts there: {err}");
    }
}
