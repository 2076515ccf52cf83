//! The kube-runtime watchers strata runs: per watched namespace one over strata's Jobs and
//! one over their pods (selected by `app.kubernetes.io/managed-by=strata`; no polling),
//! feeding [`WatchState`]; the Node watchers of [`crate::capacity`] run the same way. A
//! watcher that lists again (after a broken watch) is buffered by [`Relist`]: what was seen
//! before stays in use until the new listing is complete.

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::attempts::WatchState;
use crate::objects::managed_selector;

/// What one watcher event changes, once a relisting is buffered.
#[derive(Debug, PartialEq)]
pub enum Change<K> {
    /// A complete listing: it replaces everything this watcher reported before.
    Listed(Vec<K>),
    Applied(K),
    Deleted(K),
}

/// Buffers a watcher's listing, from its `Init` to its `InitDone`.
#[derive(Debug)]
pub struct Relist<K> {
    listing: Option<Vec<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Relist { listing: None }
    }
}

impl<K> Relist<K> {
    /// The change `event` makes; `None` while a listing is still coming.
    pub fn apply(&mut self, event: Event<K>) -> Option<Change<K>> {
        match event {
            Event::Init => {
                self.listing = Some(Vec::new());
                None
            }
            Event::InitApply(object) => {
                self.listing.get_or_insert_with(Vec::new).push(object);
                None
            }
            Event::InitDone => Some(Change::Listed(self.listing.take().unwrap_or_default())),
            Event::Apply(object) => Some(Change::Applied(object)),
            Event::Delete(object) => Some(Change::Deleted(object)),
        }
    }
}

/// Runs a watcher of `api` (retrying with backoff) on the current tokio runtime until the
/// runtime stops: each event goes to `apply`, each error to `failed`.
pub fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    mut apply: impl FnMut(Event<K>) + Send + 'static,
    mut failed: impl FnMut(watcher::Error) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => apply(event),
                Err(e) => failed(e),
            }
        }
    })
}

/// Starts the Job and Pod watchers of `namespace` on the current tokio runtime.
pub fn spawn_watchers(
    client: &Client,
    namespace: &str,
    state: &Arc<WatchState>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let config = watcher::Config::default().labels(&managed_selector());
    let jobs: Api<K8sJob> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    vec![
        spawn_watch(
            jobs,
            config.clone(),
            applier(state, namespace, WatchState::apply_job_event),
            reporter(state, namespace, "Jobs", "jobs"),
        ),
        spawn_watch(
            pods,
            config,
            applier(state, namespace, WatchState::apply_pod_event),
            reporter(state, namespace, "pods", "pods"),
        ),
    ]
}

/// Hands a namespace's events to `apply` on the state.
fn applier<K: 'static>(
    state: &Arc<WatchState>,
    namespace: &str,
    apply: fn(&WatchState, &str, Event<K>),
) -> impl FnMut(Event<K>) + Send + 'static {
    let (state, namespace) = (Arc::clone(state), namespace.to_string());
    move |event| apply(&state, &namespace, event)
}

/// Logs a watcher's error and records it as the last of `namespace/kind`.
fn reporter(
    state: &Arc<WatchState>,
    namespace: &str,
    what: &'static str,
    kind: &'static str,
) -> impl FnMut(watcher::Error) + Send + 'static {
    let (state, namespace) = (Arc::clone(state), namespace.to_string());
    move |e| {
        tracing::warn!("watching strata's {what} in namespace {namespace}: {e}");
        state.record_error(format!("{namespace}/{kind}"), e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relisting_is_one_change_once_complete() {
        let mut relist = Relist::default();
        assert_eq!(relist.apply(Event::Apply(1)), Some(Change::Applied(1)));
        assert_eq!(relist.apply(Event::Init), None);
        assert_eq!(relist.apply(Event::InitApply(2)), None);
        assert_eq!(relist.apply(Event::InitApply(3)), None);
        assert_eq!(
            relist.apply(Event::InitDone),
            Some(Change::Listed(vec![2, 3]))
        );
        assert_eq!(relist.apply(Event::Delete(2)), Some(Change::Deleted(2)));
        // A new listing starts empty: nothing of the last one is carried over.
        assert_eq!(relist.apply(Event::Init), None);
        assert_eq!(relist.apply(Event::InitDone), Some(Change::Listed(vec![])));
    }
}
