//! Progress reporting: the pipeline says what it is doing; the CLI decides whether and how
//! to show it (a progress bar on a terminal, nothing when piped).

pub trait Progress: Sync {
    /// A new stage begins ("resolving", "pushing", …).
    fn stage(&self, _name: &str) {}
    /// `total` package layers, of which `reused` come from the cache.
    fn layers(&self, _total: usize, _reused: usize) {}
    /// A package layer was built.
    fn layer_done(&self, _wheel: &str) {}
    /// Bytes were uploaded to a registry.
    fn uploaded(&self, _bytes: u64) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
