//! Wheels that install the same path: one rule whether they share a layer or not.
//!
//! Inside one layer `strata-install` refuses two wheels writing one path with other content
//! (the same bytes are written once). Across layers the overlay would let the upper layer hide
//! the lower one's file without a word, and which wheel won would depend on how the wheels
//! were grouped into layers (the layer limit). So the layers of an image are checked here
//! with the same rule before anything is committed: the same path with other content, or a
//! file where another wheel has a directory, is an error naming the path and both wheels.
//! pip lets the later install overwrite, uv warns; an image whose content depended on install
//! order would not be a function of its lock.

use std::collections::BTreeMap;
use std::io::BufReader;

use serde::{Deserialize, Serialize};
use strata_install::InstalledPath;

use crate::error::BuildError;
use crate::home::Home;
use crate::layers::PackageLayer;

/// One path of a layer as the index keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    path: String,
    content: String,
    wheel: String,
}

/// Checks that no two wheels of `layers` install one path with other content, nor a file
/// where another installs a directory. Reads the paths of reused layers from the index (or,
/// for a layer indexed before paths were kept, once from its blob); once the layers pass,
/// records in the index the paths it did not have (those of layers built now, downloaded or
/// read), so a refused image leaves nothing behind.
pub fn check_layers(home: &Home, layers: &[PackageLayer]) -> Result<(), BuildError> {
    let mut seen: BTreeMap<String, InstalledPath> = BTreeMap::new();
    let mut learned = Vec::new();
    for layer in layers {
        let (paths, new) = layer_paths(home, layer)?;
        if new {
            learned.push((&layer.added.layer.digest, to_json(&paths)));
        }
        for path in paths {
            if let Some(clash) = clash(&seen, &path) {
                return Err(BuildError::Overlap {
                    path: clash.0,
                    first: clash.1,
                    second: path.wheel,
                });
            }
            seen.entry(path.path.clone()).or_insert(path);
        }
    }
    for (digest, json) in learned {
        home.index.record_layer_paths(digest, &json)?;
    }
    Ok(())
}

/// The path, and the wheel, that `path` clashes with among those `seen` (other layers).
fn clash(seen: &BTreeMap<String, InstalledPath>, path: &InstalledPath) -> Option<(String, String)> {
    if let Some(other) = seen.get(&path.path) {
        return (other.content != path.content).then(|| (path.path.clone(), other.wheel.clone()));
    }
    // A file of another wheel where this one needs a directory...
    let mut ancestor = path.path.as_str();
    while let Some((parent, _)) = ancestor.rsplit_once('/') {
        if let Some(other) = seen.get(parent) {
            return Some((parent.to_string(), other.wheel.clone()));
        }
        ancestor = parent;
    }
    // ...or files of another wheel below what this one makes a file.
    let below = format!("{}/", path.path);
    seen.range(below.clone()..)
        .next()
        .filter(|(p, _)| p.starts_with(&below))
        .map(|(_, other)| (path.path.clone(), other.wheel.clone()))
}

/// The paths of a layer, and whether the index lacks them.
fn layer_paths(
    home: &Home,
    layer: &PackageLayer,
) -> Result<(Vec<InstalledPath>, bool), BuildError> {
    let digest = &layer.added.layer.digest;
    if let Some(paths) = &layer.paths {
        // A registry's list names its wheels as whoever wrote it did: the lock names them.
        let paths = match layer.from_registry {
            Some(_) => credited(paths, &wheel_label(layer)),
            None => paths.clone(),
        };
        return Ok((paths, true));
    }
    if let Some(json) = home.index.layer_paths(digest)? {
        if let Some(paths) = paths_from_json(&json) {
            return Ok((paths, false));
        }
    }
    Ok((read_layer(home, layer)?, true))
}

/// Who a layer's paths are credited to: its wheel's file name, or the group's. A merged
/// layer's paths are credited to the whole group: which of its wheels holds a file is in
/// the RECORDs, not worth reading here.
fn wheel_label(layer: &PackageLayer) -> String {
    match layer.wheels.as_slice() {
        [one] => one.clone(),
        many => format!("one of {}", many.join(", ")),
    }
}

fn credited(paths: &[InstalledPath], wheel: &str) -> Vec<InstalledPath> {
    paths
        .iter()
        .map(|p| InstalledPath {
            wheel: wheel.to_string(),
            ..p.clone()
        })
        .collect()
}

/// The paths of a layer read from its blob.
fn read_layer(home: &Home, layer: &PackageLayer) -> Result<Vec<InstalledPath>, BuildError> {
    let descriptor = &layer.added.layer;
    let wheel = wheel_label(layer);
    let io_error = |source| BuildError::Io {
        what: format!("reading the files of layer {}", descriptor.digest),
        source,
    };
    // A layer downloaded from a registry is staged, not yet in the store.
    let blob: Box<dyn std::io::Read> = match &layer.staged {
        Some(staged) => Box::new(std::fs::File::open(staged.path()).map_err(io_error)?),
        None => Box::new(home.store.open_blob(&descriptor.digest)?),
    };
    let tar = strata_install::decompress(&descriptor.media_type, BufReader::new(blob))
        .map_err(io_error)?;
    let listed = strata_install::layer_paths(tar).map_err(io_error)?;
    Ok(listed
        .into_iter()
        .map(|(path, content)| InstalledPath {
            path,
            content,
            wheel: wheel.clone(),
        })
        .collect())
}

/// A path list as the index (and a registry's layer index entry) keeps it; `None` when
/// `json` is not one.
pub(crate) fn paths_from_json(json: &str) -> Option<Vec<InstalledPath>> {
    let stored: Vec<Stored> = serde_json::from_str(json).ok()?;
    Some(stored.into_iter().map(from_stored).collect())
}

fn to_json(paths: &[InstalledPath]) -> String {
    let stored: Vec<Stored> = paths
        .iter()
        .map(|p| Stored {
            path: p.path.clone(),
            content: p.content.clone(),
            wheel: p.wheel.clone(),
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_default()
}

fn from_stored(s: Stored) -> InstalledPath {
    InstalledPath {
        path: s.path,
        content: s.content,
        wheel: s.wheel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, content: &str, wheel: &str) -> InstalledPath {
        InstalledPath {
            path: path.into(),
            content: content.into(),
            wheel: wheel.into(),
        }
    }

    fn layer(wheel: &str, digest: &str, paths: Vec<InstalledPath>, registry: bool) -> PackageLayer {
        let digest = strata_oci::Digest::of(digest.as_bytes());
        PackageLayer {
            key: strata_index::LayerKey {
                source: digest.clone(),
                scheme: "test".into(),
                format: 3,
            },
            added: crate::image::AddedLayer {
                layer: strata_oci::LayerDescriptor {
                    digest: digest.clone(),
                    diff_id: digest,
                    size: 1,
                    media_type: strata_oci::MEDIA_TYPE_LAYER_GZIP.into(),
                },
                packages: Vec::new(),
                created_by: String::new(),
            },
            staged: None,
            wheels: vec![wheel.to_string()],
            paths: Some(paths),
            from_registry: registry.then(|| "127.0.0.1:5000/team".to_string()),
        }
    }

    #[test]
    fn a_refused_image_leaves_no_path_list_and_a_registry_names_no_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let built = layer(
            "a-1-py3-none-any.whl",
            "a",
            vec![at("sp/a.py", "- 1", "a")],
            false,
        );
        // A registry's list that claims a.py with other content, under a forged wheel name.
        let forged = "\u{1b}[2Jevil.whl";
        let listed = layer(
            "b-1-py3-none-any.whl",
            "b",
            vec![at("sp/a.py", "- 2", forged)],
            true,
        );
        let err = check_layers(&home, &[built, listed]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("b-1-py3-none-any.whl"), "{message}");
        assert!(!message.contains("evil"), "{message}");
        for digest in ["a", "b"] {
            let digest = strata_oci::Digest::of(digest.as_bytes());
            assert_eq!(home.index.layer_paths(&digest).unwrap(), None, "{digest}");
        }
        // Layers that pass have their paths kept, credited to the lock's wheels.
        let listed = layer(
            "b-1-py3-none-any.whl",
            "b",
            vec![at("sp/b.py", "- 2", forged)],
            true,
        );
        let built = layer(
            "a-1-py3-none-any.whl",
            "a",
            vec![at("sp/a.py", "- 1", "a")],
            false,
        );
        check_layers(&home, &[built, listed]).unwrap();
        let kept = home
            .index
            .layer_paths(&strata_oci::Digest::of(b"b"))
            .unwrap()
            .unwrap();
        assert!(
            kept.contains("b-1-py3-none-any.whl") && !kept.contains("evil"),
            "{kept}"
        );
    }

    #[test]
    fn same_bytes_pass_other_bytes_and_file_versus_directory_clash() {
        let mut seen = BTreeMap::new();
        for p in [
            at("sp/a/x.py", "- 1", "a.whl"),
            at("sp/mod", "- 2", "a.whl"),
        ] {
            seen.insert(p.path.clone(), p);
        }
        assert_eq!(clash(&seen, &at("sp/a/x.py", "- 1", "b.whl")), None);
        assert_eq!(clash(&seen, &at("sp/a/y.py", "- 3", "b.whl")), None);
        let want = |p: &str| Some((p.to_string(), "a.whl".to_string()));
        assert_eq!(
            clash(&seen, &at("sp/a/x.py", "x 1", "b.whl")),
            want("sp/a/x.py")
        );
        assert_eq!(
            clash(&seen, &at("sp/mod/__init__.py", "- 4", "b.whl")),
            want("sp/mod")
        );
        assert_eq!(clash(&seen, &at("sp/a", "- 5", "b.whl")), want("sp/a"));
    }
}
