//! Installing a wheel straight from its zip into a deterministic layer, as pip and uv
//! install into a virtual environment: validated, hash-checked against RECORD, scripts
//! generated, INSTALLER and a new RECORD written. No `.pyc` (they embed mtimes).

mod content;
mod error;
mod plan;
pub mod record;
mod scheme;
pub mod script;
mod venv;
pub mod wheel;
mod zipdir;

use std::io::Write;
use std::path::Path;

use strata_cache::LayerDescriptor;

pub use error::InstallError;
pub use scheme::InstallScheme;
pub use venv::env_layer;

use crate::layer::{FileContent, LayerBuilder, LayerError};
use crate::name::PackageName;
use content::{Hashed, WheelSource};
use plan::Planned;
use record::InstalledFile;
use wheel::Wheel;

/// What [`INSTALLER`](https://packaging.python.org/en/latest/specifications/recording-installed-packages/) says.
pub const INSTALLER: &[u8] = b"strata\n";

/// A written wheel layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelLayer {
    pub descriptor: LayerDescriptor,
    pub name: PackageName,
    pub version: String,
    /// Installed files (symlinks, INSTALLER and RECORD included; directories not).
    pub files: usize,
}

/// Installs the wheel at `wheel` into `scheme` as one layer written to `out`. Everything is
/// checked before the first byte is written.
pub fn wheel_layer(
    wheel: &Path,
    scheme: &InstallScheme,
    out: impl Write,
) -> Result<WheelLayer, InstallError> {
    scheme.validate()?;
    let mut wheel = wheel::open(wheel)?;
    let (planned, skipped) = plan::plan(&mut wheel, scheme)?;
    let hashes = content::verify(&mut wheel, &planned, &skipped)?;
    let mut layer = LayerBuilder::new();
    let mut installed = Vec::new();
    let site = scheme.site_packages();
    for (key, (p, h)) in planned.iter().zip(&hashes).enumerate() {
        add_entry(&wheel, scheme, &mut layer, key, p, h)?;
        installed.push(InstalledFile {
            path: scheme::relative_to(&site, &p.dest),
            hash: Some(h.sha256.clone()),
            size: h.size,
        });
    }
    add_generated(&wheel, scheme, &mut layer, &mut installed)?;
    let files = installed.len() + 1;
    let record_entry = format!("{}/RECORD", wheel.dist_info);
    let record = record::write(installed, &record_entry);
    add_file(
        &wheel,
        &mut layer,
        &record_entry,
        &format!("{site}/{record_entry}"),
        record,
    )?;
    let mut source = WheelSource {
        archive: &mut wheel.archive,
        planned: &planned,
        hashes: &hashes,
    };
    let descriptor = layer
        .write(&mut source, out)
        .map_err(|e| write_error(&wheel.id.0, &planned, e))?;
    Ok(WheelLayer {
        descriptor,
        name: wheel.name,
        version: wheel.version,
        files,
    })
}

fn add_entry(
    wheel: &Wheel,
    scheme: &InstallScheme,
    layer: &mut LayerBuilder,
    key: usize,
    p: &Planned,
    h: &Hashed,
) -> Result<(), InstallError> {
    let result = match &h.symlink_target {
        Some(target) => {
            plan::symlink_target_safe(&p.dest, target, scheme.root())
                .map_err(|reason| wheel.id.unsafe_entry(&p.entry, reason))?;
            layer.symlink(&p.dest, target)
        }
        None => {
            let content = FileContent::Streamed { key, size: h.size };
            layer.file(&p.dest, p.executable, content)
        }
    };
    result.map_err(|source| layer_error(wheel, &p.entry, source))
}

/// Console/GUI launchers and INSTALLER, recorded like the wheel's own files.
fn add_generated(
    wheel: &Wheel,
    scheme: &InstallScheme,
    layer: &mut LayerBuilder,
    installed: &mut Vec<InstalledFile>,
) -> Result<(), InstallError> {
    let site = scheme.site_packages();
    let mut generated = Vec::new();
    for ep in &wheel.entry_points {
        let entry = format!("{}/entry_points.txt ({})", wheel.dist_info, ep.name);
        let dest = format!("{}/{}", scheme.scripts(), ep.name);
        generated.push((
            entry,
            dest,
            true,
            script::launcher(ep, &scheme.interpreter()),
        ));
    }
    let installer_entry = format!("{}/INSTALLER", wheel.dist_info);
    let installer_dest = format!("{site}/{installer_entry}");
    generated.push((installer_entry, installer_dest, false, INSTALLER.to_vec()));
    for (entry, dest, executable, bytes) in generated {
        installed.push(InstalledFile {
            path: scheme::relative_to(&site, &dest),
            hash: Some(record::sha256_b64(&bytes)),
            size: bytes.len() as u64,
        });
        layer
            .file(&dest, executable, FileContent::Bytes(bytes))
            .map_err(|source| layer_error(wheel, &entry, source))?;
    }
    Ok(())
}

fn add_file(
    wheel: &Wheel,
    layer: &mut LayerBuilder,
    entry: &str,
    dest: &str,
    bytes: Vec<u8>,
) -> Result<(), InstallError> {
    layer
        .file(dest, false, FileContent::Bytes(bytes))
        .map_err(|source| layer_error(wheel, entry, source))
}

fn layer_error(wheel: &Wheel, entry: &str, source: LayerError) -> InstallError {
    InstallError::Layer {
        wheel: wheel.id.0.clone(),
        entry: entry.to_string(),
        source,
    }
}

/// Names the wheel entry behind a failed layer path when there is one.
fn write_error(wheel: &str, planned: &[Planned], source: LayerError) -> InstallError {
    let path = match &source {
        LayerError::Entry { path, .. } | LayerError::SizeMismatch { path, .. } => Some(path),
        _ => None,
    };
    match path.and_then(|path| planned.iter().find(|p| &p.dest == path)) {
        Some(p) => InstallError::Layer {
            wheel: wheel.to_string(),
            entry: p.entry.clone(),
            source,
        },
        None => InstallError::Write {
            what: wheel.to_string(),
            source,
        },
    }
}
