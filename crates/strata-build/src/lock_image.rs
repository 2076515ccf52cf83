//! A lock made into an image on a base: its package layers (from the layer index or built),
//! the env layer carrying the lock, and the assembled config and manifest. Nothing is
//! committed here: a build commits what this stages, a verify only compares it.

use strata_index::Lease;
use strata_oci::StagedBlob;

use crate::base::BaseImage;
use crate::error::BuildError;
use crate::home::Home;
use crate::image::{self, AddedLayer, Assembled, ImageInputs};
use crate::layers::{
    check_staged, package_layers, LayerSettings, PackageLayer, RemoteLayers, Wheels,
};
use crate::progress::Progress;
use strata_install::{Bytecode, InstallScheme, LayerCompression};
use strata_python::{IndexCredentials, Lock};

/// The name of the lock file in the env layer (relative to the venv).
pub const LOCK_FILE: &str = "strata-lock.json";

/// What an image is made from besides its base.
pub struct LockInputs<'a> {
    pub base: &'a BaseImage,
    pub lock: &'a Lock,
    /// For the wheels' downloads (never stored).
    pub credentials: &'a IndexCredentials,
    pub compression: LayerCompression,
    /// Write pycs into the package layers (`--compile`).
    pub compile: bool,
    /// Threads for fetching wheels and building layers.
    pub jobs: usize,
    /// Most package layers (see [`crate::layers::group_wheels`]).
    pub budget: usize,
}

/// The image of a lock, its new blobs staged in the store's temporary directory.
pub struct LockImage {
    /// In lock order; `staged` is `None` for a layer the layer index had.
    pub layers: Vec<PackageLayer>,
    pub env_staged: StagedBlob,
    pub assembled: Assembled,
}

/// Makes the image of `inputs.lock` on `inputs.base` in `home`'s store (staged, not
/// committed). Every blob it reuses or stages is held by `lease`. Layers the store lacks
/// are taken from `remote`'s registries when they have them (a verify passes none).
pub fn image_from_lock(
    home: &Home,
    lease: &Lease,
    inputs: &LockInputs,
    remote: RemoteLayers,
    progress: &dyn Progress,
) -> Result<LockImage, BuildError> {
    let LockInputs {
        base,
        lock,
        credentials,
        compression,
        compile,
        jobs,
        budget,
    } = *inputs;
    let python = lock.target.python;
    let interpreter = base.find_interpreter_in(&home.index, Some(python))?;
    let mut scheme = InstallScheme::new(python).with_compression(compression);
    if compile {
        let host = home.resolver.host_python(python)?;
        scheme = scheme.with_bytecode(Bytecode { python: host });
    }
    let wheels = Wheels { lock, credentials };
    let settings = LayerSettings {
        scheme: &scheme,
        jobs,
        budget,
    };
    let layers = package_layers(home, lease, &wheels, &settings, remote, progress)?;
    crate::overlap::check_layers(home, &layers)?;
    progress.stage("writing the image");
    let mut env_writer = home.store.writer()?;
    let env_layer = strata_install::env_layer(
        &scheme,
        &interpreter.path,
        &interpreter.full_version,
        &[(LOCK_FILE.to_string(), lock.canonical_bytes())],
        &mut env_writer,
    )
    .map_err(|source| BuildError::EnvLayer { source })?;
    let env_staged = env_writer.finish().map_err(BuildError::tmp_io(home))?;
    check_staged(&env_staged, &env_layer)?;

    let mut added: Vec<AddedLayer> = layers.iter().map(|l| l.added.clone()).collect();
    added.push(AddedLayer {
        layer: env_layer,
        packages: Vec::new(),
        created_by: format!("strata: venv {} on {}", scheme.venv, interpreter.path),
    });
    let assembled = image::assemble(&ImageInputs {
        base,
        layers: &added,
        venv: &scheme.venv,
        lock_digest: &lock.digest().0,
        packages: &lock.packages(),
        layer_format: image::layer_format(compression, compile),
    });
    Ok(LockImage {
        layers,
        env_staged,
        assembled,
    })
}
