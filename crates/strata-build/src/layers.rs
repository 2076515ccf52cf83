//! The package layers of an image: one per wheel, reused from the layer index when it has
//! them, otherwise fetched and installed `jobs` at a time. Past the layer limit the smallest
//! wheels are merged into one layer (overlay and container runtimes fail somewhere above 120
//! layers; nixpkgs' layered images stop at 100 the same way, ranking by popularity, which
//! would make the image depend on the store's history: strata ranks by size instead).

use std::sync::Mutex;

use strata_index::LayerKey;
use strata_index::Lease;
use strata_oci::{Digest, LayerDescriptor};
use strata_oci::{StagedBlob, Store};

use crate::error::BuildError;
use crate::home::Home;
use crate::image::AddedLayer;
use crate::progress::Progress;
use crate::registry_layers;
use crate::remote_cache::{Lookups, RegistryCache};
use strata_install::LAYER_FORMAT_VERSION;
use strata_install::{InstallScheme, InstalledPath};
use strata_python::{IndexCredentials, WheelCache};
use strata_python::{Lock, LockedWheel};

/// Layers in an image, base layers and the env layer included, unless told otherwise.
pub const DEFAULT_LAYER_LIMIT: usize = 100;

/// A package layer: reused from the index, or staged and waiting for commit.
pub struct PackageLayer {
    pub key: LayerKey,
    pub added: AddedLayer,
    /// The blob to commit: built, or downloaded from a registry.
    pub staged: Option<StagedBlob>,
    /// The file names of its wheels, in lock order.
    pub wheels: Vec<String>,
    /// Its files and symlinks when it was built now, or listed by the registry entry it was
    /// downloaded by (a reused layer's are in the index).
    pub paths: Option<Vec<InstalledPath>>,
    /// `REGISTRY/REPO` the layer was downloaded from (step 3 of the registry cache).
    pub from_registry: Option<String>,
}

impl PackageLayer {
    /// Whether the build reused the layer (from the store or a registry) rather than made it.
    pub fn reused(&self) -> bool {
        self.staged.is_none() || self.from_registry.is_some()
    }
}

/// Which wheels share a layer: `budget` layers for `sizes.len()` wheels (in lock order).
/// Every wheel gets its own layer while they fit; otherwise the smallest ones (ties broken
/// by lock order, later first) go together into one layer. The large wheels, which hold most
/// of the bytes, keep their own layers and stay shared with every environment that uses
/// them; the small ones cost little to store twice. A wheel's size is fixed by its sha256,
/// so the grouping, and the image, depend on the lock alone, never on what a store built
/// before. Groups are returned in lock order of their first wheel.
pub fn group_wheels(sizes: &[u64], budget: usize) -> Vec<Vec<usize>> {
    let n = sizes.len();
    if n <= budget || budget == 0 {
        return (0..n).map(|i| vec![i]).collect();
    }
    let merged_count = n - budget + 1;
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| (sizes[i], std::cmp::Reverse(i)));
    let mut merged: Vec<usize> = by_size[..merged_count].to_vec();
    merged.sort_unstable();
    let mut groups: Vec<Vec<usize>> = (0..n)
        .filter(|i| !merged.contains(i))
        .map(|i| vec![i])
        .collect();
    groups.push(merged);
    groups.sort_by_key(|g| g[0]);
    groups
}

/// The size of every wheel of the lock, needed only past the layer limit: from the lock
/// when the index reported it, else from the wheel cache (its file's size, without hashing
/// it: a wrong copy fails its check when it is read), else by fetching it.
fn wheel_sizes(home: &Home, wheels: &Wheels) -> Result<Vec<u64>, BuildError> {
    wheels
        .lock
        .wheels
        .iter()
        .map(|w| wheel_size(home, w, wheels.credentials))
        .collect()
}

fn wheel_size(
    home: &Home,
    wheel: &LockedWheel,
    credentials: &IndexCredentials,
) -> Result<u64, BuildError> {
    if let Some(size) = wheel.size {
        return Ok(size);
    }
    if let Ok(meta) = std::fs::metadata(home.wheels.path_of(wheel)) {
        return Ok(meta.len());
    }
    let path = home.wheels.fetch(wheel, credentials)?;
    let meta = std::fs::metadata(&path).map_err(|source| BuildError::Io {
        what: format!("reading the size of {}", path.display()),
        source,
    })?;
    Ok(meta.len())
}

/// Adds digests to a lease under the shared GC lock: after this, a sweep cannot take them,
/// so a blob found present afterwards stays present.
pub fn hold(home: &Home, lease: &Lease, digests: &[Digest]) -> Result<(), BuildError> {
    let _gc = home.store.gc_lock_shared()?;
    lease.add(digests)?;
    Ok(())
}

pub fn check_staged(staged: &StagedBlob, layer: &LayerDescriptor) -> Result<(), BuildError> {
    if staged.digest != layer.digest || staged.size != layer.size {
        return Err(BuildError::Internal(format!(
            "layer writer reported {} ({} bytes) but the store received {} ({} bytes)",
            layer.digest, layer.size, staged.digest, staged.size
        )));
    }
    Ok(())
}

/// The layer index key of a group: the wheel's sha256 for one wheel, a digest of the sorted
/// wheel digests for a merged group.
fn group_key(wheels: &[&LockedWheel], scheme_id: &str) -> LayerKey {
    let source = match wheels {
        [one] => one.sha256.clone(),
        many => {
            let mut digests: Vec<String> = many.iter().map(|w| w.sha256.to_string()).collect();
            digests.sort();
            Digest::of(format!("merged:{}", digests.join(",")).as_bytes())
        }
    };
    LayerKey {
        source,
        scheme: scheme_id.to_string(),
        format: LAYER_FORMAT_VERSION,
    }
}

fn added_layer(wheels: &[&LockedWheel], layer: LayerDescriptor) -> AddedLayer {
    let packages = wheels
        .iter()
        .map(|w| format!("{}=={}", w.name, w.version))
        .collect();
    let created_by = match wheels {
        [one] => format!("strata: install {}", one.filename),
        many => format!(
            "strata: install the {} smallest wheels in one layer",
            many.len()
        ),
    };
    AddedLayer {
        layer,
        packages,
        created_by,
    }
}

/// The wheels of a lock, and the credentials their downloads may need (never stored).
pub struct Wheels<'a> {
    pub lock: &'a Lock,
    pub credentials: &'a IndexCredentials,
}

/// How the package layers are made.
pub struct LayerSettings<'a> {
    pub scheme: &'a InstallScheme,
    /// Threads for fetching wheels and building layers.
    pub jobs: usize,
    /// Package layers the image has room for (past it, the smallest wheels share one).
    pub budget: usize,
}

/// Where layers the store lacks may be found before they are built: the registries of the
/// build's cache (their layer index), and the lookups of this build so far.
pub struct RemoteLayers<'a> {
    pub cache: &'a RegistryCache,
    pub lookups: &'a mut Lookups,
}

/// One layer per wheel group, in lock order: from the store's layer index, else from a
/// registry's, else built.
pub fn package_layers(
    home: &Home,
    lease: &Lease,
    wheels: &Wheels,
    settings: &LayerSettings,
    remote: RemoteLayers,
    progress: &dyn Progress,
) -> Result<Vec<PackageLayer>, BuildError> {
    let scheme_id = settings.scheme.id();
    let lock = wheels.lock;
    let sizes = match lock.wheels.len() > settings.budget {
        true => wheel_sizes(home, wheels)?,
        false => vec![0; lock.wheels.len()],
    };
    let groups: Vec<Vec<&LockedWheel>> = group_wheels(&sizes, settings.budget)
        .into_iter()
        .map(|g| g.into_iter().map(|i| &lock.wheels[i]).collect())
        .collect();
    let mut slots: Vec<Option<PackageLayer>> = Vec::with_capacity(groups.len());
    let mut todo = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let key = group_key(group, &scheme_id);
        let known = match home.index.layer(&key)? {
            Some(layer) => {
                hold(home, lease, std::slice::from_ref(&layer.digest))?;
                Some(layer).filter(|l| home.store.has_blob(&l.digest))
            }
            None => None,
        };
        match known {
            Some(layer) => slots.push(Some(PackageLayer {
                added: added_layer(group, layer),
                key,
                staged: None,
                from_registry: None,
                wheels: filenames(group),
                paths: None,
            })),
            None => {
                slots.push(None);
                todo.push((i, group.as_slice(), key));
            }
        }
    }
    let media_type = settings.scheme.compression.media_type();
    let todo = take_from_registries(home, todo, &mut slots, media_type, remote)?;
    progress.layers(groups.len(), groups.len() - todo.len());
    for (i, layer) in build_all(home, todo, settings, wheels.credentials, progress)? {
        slots[i] = Some(layer);
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| BuildError::Internal("a layer was not built".into())))
        .collect()
}

/// Fills the slots of the layers a registry of the cache has (downloaded and staged); the
/// rest of `todo` is left to build.
fn take_from_registries<'a>(
    home: &Home,
    todo: Vec<Job<'a>>,
    slots: &mut [Option<PackageLayer>],
    media_type: &str,
    remote: RemoteLayers,
) -> Result<Vec<Job<'a>>, BuildError> {
    if remote.cache.is_empty() || todo.is_empty() {
        return Ok(todo);
    }
    let keys: Vec<&LayerKey> = todo.iter().map(|(_, _, key)| key).collect();
    let names: Vec<String> = todo.iter().map(|(_, group, _)| layer_name(group)).collect();
    let wheel_bytes: Vec<Option<u64>> = todo
        .iter()
        .map(|(_, group, _)| group.iter().map(|w| w.size).sum())
        .collect();
    let wanted = registry_layers::Wanted {
        keys: &keys,
        names: &names,
        media_type,
        wheel_bytes: &wheel_bytes,
    };
    let fetched = registry_layers::fetch(home, remote.cache, &wanted, remote.lookups)?;
    let mut left = Vec::new();
    for ((i, group, key), found) in todo.into_iter().zip(fetched) {
        let Some(found) = found else {
            left.push((i, group, key));
            continue;
        };
        slots[i] = Some(PackageLayer {
            added: added_layer(group, found.layer),
            key,
            staged: Some(found.staged),
            from_registry: Some(found.repository),
            wheels: filenames(group),
            paths: found.paths,
        });
    }
    Ok(left)
}

type Job<'a> = (usize, &'a [&'a LockedWheel], LayerKey);

/// What a message calls the layer of `group`: its first wheel, and how many share it.
fn layer_name(group: &[&LockedWheel]) -> String {
    match group {
        [] => "an empty layer".to_string(),
        [one] => format!("the layer of {}", one.filename),
        [first, rest @ ..] => format!(
            "the layer of {} (and {} more wheels)",
            first.filename,
            rest.len()
        ),
    }
}

/// Builds the missing layers on `jobs` threads, the largest wheels first (a large wheel
/// started last would leave the other threads idle while it compresses); the first error
/// stops the others. Sizes the lock does not know count as 0, in lock order.
fn build_all(
    home: &Home,
    mut todo: Vec<Job<'_>>,
    settings: &LayerSettings,
    credentials: &IndexCredentials,
    progress: &dyn Progress,
) -> Result<Vec<(usize, PackageLayer)>, BuildError> {
    let (store, wheels) = (&home.store, &home.wheels);
    todo.sort_by_key(|(_, group, _)| {
        std::cmp::Reverse(group.iter().map(|w| w.size.unwrap_or(0)).sum::<u64>())
    });
    let results = Mutex::new(Vec::new());
    let next = Mutex::new(todo.into_iter());
    let first_error: Mutex<Option<BuildError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..settings.jobs.max(1) {
            s.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let Some((i, group, key)) = next.lock().ok().and_then(|mut it| it.next()) else {
                    return;
                };
                match build_one(store, wheels, group, settings.scheme, credentials) {
                    Ok((layer, paths, staged)) => {
                        progress.layer_done(&group[0].filename);
                        let built = PackageLayer {
                            added: added_layer(group, layer),
                            key,
                            staged: Some(staged),
                            from_registry: None,
                            wheels: filenames(group),
                            paths: Some(paths),
                        };
                        if let Ok(mut r) = results.lock() {
                            r.push((i, built));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_default())
}

fn filenames(group: &[&LockedWheel]) -> Vec<String> {
    group.iter().map(|w| w.filename.clone()).collect()
}

/// Fetches a group's wheels and installs them into one staged layer blob. Takes the store
/// and the wheel cache (not the whole home) because it runs on worker threads.
fn build_one(
    store: &Store,
    wheels: &WheelCache,
    group: &[&LockedWheel],
    scheme: &InstallScheme,
    credentials: &IndexCredentials,
) -> Result<(LayerDescriptor, Vec<InstalledPath>, StagedBlob), BuildError> {
    let paths = group
        .iter()
        .map(|w| wheels.fetch(w, credentials))
        .collect::<Result<Vec<_>, _>>()?;
    // The layer writer hashes the compressed stream for the descriptor; the store need not
    // hash it again (it still counts it, and check_staged compares).
    let mut writer = store.prehashed_writer()?;
    let names = || {
        group
            .iter()
            .map(|w| w.filename.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (descriptor, installed) = match paths.as_slice() {
        [one] => {
            strata_install::wheel_layer(one, scheme, &mut writer).map(|l| (l.descriptor, l.paths))
        }
        many => {
            let refs: Vec<&std::path::Path> = many.iter().map(|p| p.as_path()).collect();
            strata_install::wheels_layer(&refs, scheme, &mut writer)
                .map(|l| (l.descriptor, l.paths))
        }
    }
    .map_err(|source| BuildError::Install {
        wheel: names(),
        source,
    })?;
    let staged = writer
        .finish(descriptor.digest.clone(), descriptor.size)
        .map_err(|source| BuildError::Io {
            what: "writing a layer into the store's temporary directory".into(),
            source,
        })?;
    check_staged(&staged, &descriptor)?;
    Ok((descriptor, installed, staged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wheel_gets_a_layer_while_they_fit() {
        assert_eq!(group_wheels(&[3, 1, 2], 3), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(
            group_wheels(&[3, 1, 2], 10),
            vec![vec![0], vec![1], vec![2]]
        );
    }

    #[test]
    fn the_smallest_wheels_are_merged_into_one_layer() {
        // 6 wheels, 4 layers: the 3 smallest (1, 3, 5) share a layer.
        let groups = group_wheels(&[9, 0, 7, 1, 8, 0], 4);
        assert_eq!(groups, vec![vec![0], vec![1, 3, 5], vec![2], vec![4]]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 6);
        // Ties: later wheels merge first, so the result depends on the lock alone.
        assert_eq!(group_wheels(&[0, 0, 0], 2), vec![vec![0], vec![1, 2]]);
        // A budget of one merges everything.
        assert_eq!(group_wheels(&[1, 2, 3], 1), vec![vec![0, 1, 2]]);
    }
}
