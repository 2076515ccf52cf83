//! `$STRATA_HOME`: where the store, the wheel cache, the database and temporary files live.

use std::path::{Path, PathBuf};

use strata_index::{Index, IndexError};
use strata_oci::{Store, StoreError};

use strata_python::Resolver;
use strata_python::WheelCache;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find a home for strata's data: set STRATA_HOME, XDG_CACHE_HOME or HOME")]
    NoHome,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The opened data directory.
pub struct Home {
    /// Repairs made on the way (corrupt blobs found and replaced), for the user to see.
    repairs: std::sync::Mutex<Vec<String>>,
    pub root: PathBuf,
    pub store: Store,
    pub index: Index,
    pub wheels: WheelCache,
    pub resolver: Resolver,
}

impl Home {
    /// `$STRATA_HOME`, else `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`.
    pub fn default_root() -> Result<PathBuf, HomeError> {
        if let Some(home) = std::env::var_os("STRATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(home));
        }
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(xdg).join("strata"));
        }
        let home = std::env::var_os("HOME").ok_or(HomeError::NoHome)?;
        Ok(PathBuf::from(home).join(".cache").join("strata"))
    }

    pub fn open(root: &Path) -> Result<Home, HomeError> {
        let store = Store::open(&root.join("oci"), &root.join("tmp"))?;
        let index = Index::open(&root.join("strata.db"))?;
        // One wheel cache for resolution and fetches: a wheel the resolver copied into it
        // while hashing it is not hashed again by the build's first fetch.
        let wheels = WheelCache::new(root.join("wheels"));
        Ok(Home {
            repairs: Default::default(),
            root: root.to_path_buf(),
            store,
            index,
            resolver: Resolver::new(root.join("uv-cache")).building_into(wheels.clone()),
            wheels,
        })
    }

    pub fn note_repair(&self, note: String) {
        if let Ok(mut repairs) = self.repairs.lock() {
            repairs.push(note);
        }
    }

    /// The repairs noted so far.
    pub fn repairs(&self) -> Vec<String> {
        self.repairs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Directory for temporary files, on the same filesystem as the store.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}
