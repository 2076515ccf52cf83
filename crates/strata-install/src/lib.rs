//! Installing a wheel straight from its zip into a deterministic layer, as pip and uv
//! install into a virtual environment: validated, hash-checked against RECORD, scripts
//! generated, INSTALLER and a new RECORD written. `.pyc` files only when asked for
//! ([`Bytecode`]), as unchecked-hash pycs so the layer stays deterministic.

mod assemble;
mod bytecode;
mod content;
mod error;
mod inflate;
mod layer;
mod paths;
mod plan;
mod record;
mod scheme;
mod script;
mod venv;
mod wheel;
mod zipdir;

use std::io::Write;
use std::path::Path;

use strata_oci::LayerDescriptor;

pub use bytecode::{Bytecode, BytecodeError};
pub use error::InstallError;
pub use inflate::inflate_entry;
pub use layer::GZIP_LEVEL;
pub use layer::{decompress, LayerCompression, UnknownCompression};
pub use layer::{ContentSource, Deflated, FileContent, LayerBuilder, LayerError, NoSource};
pub use layer::{COMPRESSION, COMPRESSION_ZSTD, LAYER_FORMAT_VERSION, ZSTD_LEVEL};
pub use paths::layer_paths;
pub use record::{b64, RecordError};
pub use scheme::InstallScheme;
pub use script::EntryPointError;
pub use venv::env_layer;
pub use wheel::WheelLimits;

use assemble::{Assembly, Prepared};
use strata_python::PackageName;

/// What [`INSTALLER`](https://packaging.python.org/en/latest/specifications/recording-installed-packages/) says.
pub const INSTALLER: &[u8] = b"strata\n";

/// One file or symlink a layer installs: what the layers of one image are checked with, since
/// a path two wheels install with other content is refused whether they share a layer or
/// not (in separate layers the upper one would hide the other's file without a word).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPath {
    /// The path in the layer (`opt/venv/lib/python3.11/site-packages/x/__init__.py`).
    pub path: String,
    /// `- <sha256>` or `x <sha256>` (not executable, executable; urlsafe base64 as in
    /// RECORD) for a file, `-> TARGET` for a symlink.
    pub content: String,
    /// The file name of the wheel that installed it.
    pub wheel: String,
}

/// A written wheel layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelLayer {
    pub descriptor: LayerDescriptor,
    pub name: PackageName,
    pub version: String,
    /// Installed files (symlinks, INSTALLER and RECORD included; directories not).
    pub files: usize,
    /// Every file and symlink, sorted by path.
    pub paths: Vec<InstalledPath>,
}

/// A written layer of several wheels (see [`wheels_layer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedLayer {
    pub descriptor: LayerDescriptor,
    /// Name and version of every wheel in the layer, sorted by name.
    pub packages: Vec<(PackageName, String)>,
    /// Installed files of all wheels (symlinks, INSTALLER and RECORD included; directories
    /// not).
    pub files: usize,
    /// Every file and symlink, sorted by path.
    pub paths: Vec<InstalledPath>,
}

/// Installs the wheel at `wheel` into `scheme` as one layer written to `out`. Everything is
/// checked before the first byte is written. The one-wheel case of [`wheels_layer`]: the
/// same bytes as a merged layer of this wheel alone.
pub fn wheel_layer(
    wheel: &Path,
    scheme: &InstallScheme,
    out: impl Write,
) -> Result<WheelLayer, InstallError> {
    let merged = wheels_layer(&[wheel], scheme, out)?;
    let (name, version) = merged
        .packages
        .into_iter()
        .next()
        .ok_or(InstallError::NoWheels)?;
    Ok(WheelLayer {
        descriptor: merged.descriptor,
        name,
        version,
        files: merged.files,
        paths: merged.paths,
    })
}

/// Installs several wheels into `scheme` as ONE layer written to `out`, for images past the
/// layer limit. Each wheel is validated and hash-checked as by [`wheel_layer`] and gets its
/// own INSTALLER and RECORD; two wheels installing the same path with other content
/// (directories such as namespace packages may be shared, and the same bytes are written
/// once) or the same project are errors naming both. The bytes
/// depend only on the set of wheels, not on their order in `wheels`. Everything is checked
/// before the first byte is written.
pub fn wheels_layer(
    wheels: &[&Path],
    scheme: &InstallScheme,
    out: impl Write,
) -> Result<MergedLayer, InstallError> {
    wheels_layer_with_limits(wheels, scheme, &WheelLimits::default(), out)
}

/// [`wheels_layer`] with other caps than the defaults on each wheel (zip bombs).
pub fn wheels_layer_with_limits(
    wheels: &[&Path],
    scheme: &InstallScheme,
    limits: &WheelLimits,
    out: impl Write,
) -> Result<MergedLayer, InstallError> {
    scheme.validate()?;
    if wheels.is_empty() {
        return Err(InstallError::NoWheels);
    }
    // Opened in path order so that which bad wheel is reported does not depend on the
    // caller's order either.
    let mut paths = wheels.to_vec();
    paths.sort_unstable();
    let mut prepared = paths
        .into_iter()
        .map(|path| Prepared::open(path, scheme, limits))
        .collect::<Result<Vec<_>, _>>()?;
    prepared.sort_by(|a, b| (&a.wheel.name, &a.wheel.id.0).cmp(&(&b.wheel.name, &b.wheel.id.0)));
    one_version_each(&prepared)?;
    if let Some(bytecode) = &scheme.bytecode {
        for p in &mut prepared {
            p.compile(bytecode, scheme)?;
        }
    }
    let mut assembly = Assembly::new(scheme);
    let mut files = 0;
    for p in &prepared {
        files += assembly.add(p)?;
    }
    let what = layer_name(&prepared);
    let paths = assembly.paths();
    let descriptor = assembly.write(&mut prepared, &what, out)?;
    let packages = prepared
        .into_iter()
        .map(|p| (p.wheel.name, p.wheel.version))
        .collect();
    Ok(MergedLayer {
        descriptor,
        packages,
        files,
        paths,
    })
}

/// Two versions of a project would overwrite each other's modules; `prepared` is sorted by
/// name.
fn one_version_each(prepared: &[Prepared]) -> Result<(), InstallError> {
    let same = prepared
        .windows(2)
        .find(|pair| pair[0].wheel.name == pair[1].wheel.name);
    match same {
        Some([a, b]) => Err(InstallError::SameProject {
            name: a.wheel.name.to_string(),
            first: a.wheel.id.0.clone(),
            second: b.wheel.id.0.clone(),
        }),
        _ => Ok(()),
    }
}

/// What a write error calls the layer: the wheel's file name, or all of them.
fn layer_name(prepared: &[Prepared]) -> String {
    let ids: Vec<&str> = prepared.iter().map(|p| p.wheel.id.0.as_str()).collect();
    match ids.as_slice() {
        [one] => one.to_string(),
        more => format!("the merged layer of {}", more.join(", ")),
    }
}
