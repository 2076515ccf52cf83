//! Putting verified wheels into one layer: each wheel's files, launchers, INSTALLER and a new
//! RECORD of its own, with a record of which wheel owns each path so that two wheels writing
//! the same file with other content is an error naming both (the rule across layers too:
//! `strata-build` checks the layers of an image with [`crate::InstalledPath`]s). The same
//! bytes at the same path from two wheels are written once. One wheel is the case of
//! [`crate::wheel_layer`]; several are a merged layer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use strata_oci::LayerDescriptor;

use crate::bytecode::Bytecode;
use crate::content::{self, Hashed, KeyRanges, Verified, WheelSource};
use crate::layer::{FileContent, LayerBuilder, LayerError};
use crate::plan::{self, Planned};
use crate::record::{self, InstalledFile};
use crate::scheme::{self, InstallScheme};
use crate::script;
use crate::wheel::{self, Wheel, WheelLimits};
use crate::{InstallError, InstalledPath, INSTALLER};

/// A wheel opened, planned and hash-checked against its RECORD: nothing left to check
/// before its entries go into a layer.
pub struct Prepared {
    pub wheel: Wheel,
    planned: Vec<Planned>,
    verified: Verified,
    /// The pycs of its modules (layer path, bytes), when the scheme asks for them.
    pycs: Vec<(String, Vec<u8>)>,
}

impl Prepared {
    pub fn open(
        path: &Path,
        scheme: &InstallScheme,
        limits: &WheelLimits,
    ) -> Result<Prepared, InstallError> {
        let mut wheel = wheel::open_with(path, limits)?;
        let (planned, skipped) = plan::plan(&mut wheel, scheme)?;
        let verified = content::verify(&mut wheel, &planned, &skipped)?;
        Ok(Prepared {
            wheel,
            planned,
            verified,
            pycs: Vec::new(),
        })
    }

    /// Compiles the wheel's modules in site-packages (regular `.py` files) with `bytecode`.
    pub fn compile(
        &mut self,
        bytecode: &Bytecode,
        scheme: &InstallScheme,
    ) -> Result<(), InstallError> {
        let site = format!("{}/", scheme.site_packages());
        let mut modules = Vec::new();
        for (p, h) in self.planned.iter().zip(&self.verified.hashes) {
            if p.symlink || h.symlink_target.is_some() {
                continue;
            }
            if !(p.dest.starts_with(&site) && p.dest.ends_with(".py")) {
                continue;
            }
            let mut file = self
                .wheel
                .archive
                .by_index(p.index)
                .map_err(|e| self.wheel.id.corrupt(&p.entry, e.to_string()))?;
            let mut source = Vec::with_capacity(h.size as usize);
            file.read_to_end(&mut source)
                .map_err(|e| self.wheel.id.entry_error(&p.entry, e))?;
            drop(file);
            modules.push((p.dest.clone(), source));
        }
        let mut pycs = bytecode
            .compile(scheme.python, &self.wheel.id.0, &modules)
            .map_err(|source| InstallError::Bytecode {
                wheel: self.wheel.id.0.clone(),
                source: Box::new(source),
            })?;
        // Some wheels ship pycs of their own (numpy 2.2 does): theirs stay, as RECORD says.
        let shipped: std::collections::HashSet<&str> =
            self.planned.iter().map(|p| p.dest.as_str()).collect();
        pycs.retain(|(dest, _)| !shipped.contains(dest.as_str()));
        self.pycs = pycs;
        Ok(())
    }
}

/// The entries of a layer under construction and the wheel each leaf path came from.
pub struct Assembly<'s> {
    scheme: &'s InstallScheme,
    layer: LayerBuilder,
    /// Layer path of every file and symlink -> index of its wheel in the assembly and what
    /// it holds ([`content_id`]).
    owners: BTreeMap<String, (usize, String)>,
    /// File names of the wheels added so far, for errors.
    ids: Vec<String>,
    /// First streamed key of each wheel added so far.
    key_starts: Vec<usize>,
    next_key: usize,
}

impl<'s> Assembly<'s> {
    pub fn new(scheme: &'s InstallScheme) -> Self {
        Assembly {
            scheme,
            layer: LayerBuilder::new(),
            owners: BTreeMap::new(),
            ids: Vec::new(),
            key_starts: Vec::new(),
            next_key: 0,
        }
    }

    /// Adds every entry of `p` and its generated files. Returns the number of files
    /// installed (INSTALLER and RECORD included). Wheels must be added in the order their
    /// sources are later given to [`Assembly::write`].
    pub fn add(&mut self, p: &Prepared) -> Result<usize, InstallError> {
        let owner = self.ids.len();
        self.ids.push(p.wheel.id.0.clone());
        self.key_starts.push(self.next_key);
        let site = self.scheme.site_packages();
        let mut installed = Vec::with_capacity(p.planned.len() + 2);
        for (i, (planned, h)) in p.planned.iter().zip(&p.verified.hashes).enumerate() {
            self.add_entry(owner, &p.wheel, self.next_key + i, planned, h)?;
            installed.push(InstalledFile {
                path: scheme::relative_to(&site, &planned.dest),
                hash: Some(h.sha256.clone()),
                size: h.size,
            });
        }
        self.next_key += p.planned.len();
        self.add_pycs(owner, p, &mut installed)?;
        self.add_generated(owner, &p.wheel, &mut installed)?;
        let files = installed.len() + 1;
        let record_entry = format!("{}/RECORD", p.wheel.dist_info);
        let record = record::write(installed, &record_entry);
        let dest = format!("{site}/{record_entry}");
        let id = content_id(false, &record::sha256_b64(&record));
        self.add_leaf(owner, &p.wheel, &record_entry, &dest, id, |layer| {
            layer.file(&dest, false, FileContent::Bytes(record))
        })?;
        Ok(files)
    }

    fn add_entry(
        &mut self,
        owner: usize,
        wheel: &Wheel,
        key: usize,
        p: &Planned,
        h: &Hashed,
    ) -> Result<(), InstallError> {
        let root = self.scheme.root();
        match &h.symlink_target {
            Some(target) => {
                plan::symlink_target_safe(&p.dest, target, root)
                    .map_err(|reason| wheel.id.unsafe_entry(&p.entry, reason))?;
                let id = symlink_id(target);
                self.add_leaf(owner, wheel, &p.entry, &p.dest, id, |layer| {
                    layer.symlink(&p.dest, target)
                })
            }
            None => {
                let content = FileContent::Streamed { key, size: h.size };
                let id = content_id(p.executable, &h.sha256);
                self.add_leaf(owner, wheel, &p.entry, &p.dest, id, |layer| {
                    layer.file(&p.dest, p.executable, content)
                })
            }
        }
    }

    /// The pycs compiled for `p`, recorded like its own files (pip records them too).
    fn add_pycs(
        &mut self,
        owner: usize,
        p: &Prepared,
        installed: &mut Vec<InstalledFile>,
    ) -> Result<(), InstallError> {
        let site = self.scheme.site_packages();
        for (dest, bytes) in &p.pycs {
            let sha = record::sha256_b64(bytes);
            installed.push(InstalledFile {
                path: scheme::relative_to(&site, dest),
                hash: Some(sha.clone()),
                size: bytes.len() as u64,
            });
            let id = content_id(false, &sha);
            self.add_leaf(owner, &p.wheel, dest, dest, id, |layer| {
                layer.file(dest, false, FileContent::Bytes(bytes.clone()))
            })?;
        }
        Ok(())
    }

    /// Console/GUI launchers and INSTALLER, recorded like the wheel's own files.
    fn add_generated(
        &mut self,
        owner: usize,
        wheel: &Wheel,
        installed: &mut Vec<InstalledFile>,
    ) -> Result<(), InstallError> {
        let site = self.scheme.site_packages();
        let mut generated = Vec::new();
        for ep in &wheel.entry_points {
            let entry = format!("{}/entry_points.txt ({})", wheel.dist_info, ep.name);
            let dest = format!("{}/{}", self.scheme.scripts(), ep.name);
            let launcher = script::launcher(ep, &self.scheme.interpreter());
            generated.push((entry, dest, true, launcher));
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
            let id = content_id(executable, &record::sha256_b64(&bytes));
            self.add_leaf(owner, wheel, &entry, &dest, id, |layer| {
                layer.file(&dest, executable, FileContent::Bytes(bytes))
            })?;
        }
        Ok(())
    }

    /// Adds a file or symlink at `dest` holding `id`. The same content at a path another
    /// wheel installed is written once; other content there (or below it) is an
    /// [`InstallError::Conflict`]; a clash inside one wheel stays the layer error of its entry.
    fn add_leaf(
        &mut self,
        owner: usize,
        wheel: &Wheel,
        entry: &str,
        dest: &str,
        id: String,
        add: impl FnOnce(&mut LayerBuilder) -> Result<(), LayerError>,
    ) -> Result<(), InstallError> {
        if let Some((other, other_id)) = self.owners.get(dest) {
            if *other != owner && *other_id == id {
                return Ok(());
            }
        }
        if let Some(err) = self.conflict(owner, dest) {
            return Err(err);
        }
        if let Err(source) = add(&mut self.layer) {
            let clash = match &source {
                LayerError::Duplicate { path } | LayerError::NotADirectory { path } => {
                    self.conflict(owner, path)
                }
                _ => None,
            };
            return Err(clash.unwrap_or_else(|| layer_error(wheel, entry, source)));
        }
        self.owners.insert(dest.to_string(), (owner, id));
        Ok(())
    }

    /// Every file and symlink of the layer, with the wheel that installed it (the first, for
    /// a path two wheels installed alike).
    pub fn paths(&self) -> Vec<InstalledPath> {
        self.owners
            .iter()
            .map(|(path, (owner, content))| InstalledPath {
                path: path.clone(),
                content: content.clone(),
                wheel: self.ids[*owner].clone(),
            })
            .collect()
    }

    /// The conflict error if another wheel installs `path` or something below it.
    fn conflict(&self, owner: usize, path: &str) -> Option<InstallError> {
        let below = format!("{path}/");
        let other = self.owners.get(path).map(|(o, _)| *o).or_else(|| {
            self.owners
                .range(below.clone()..)
                .next()
                .filter(|(p, _)| p.starts_with(&below))
                .map(|(_, (o, _))| *o)
        })?;
        (other != owner).then(|| InstallError::Conflict {
            path: path.to_string(),
            first: self.ids[other].clone(),
            second: self.ids[owner].clone(),
        })
    }

    /// Writes the layer, streaming file contents from `wheels`, the same wheels in the same
    /// order as they were added.
    pub fn write(
        self,
        wheels: &mut [Prepared],
        what: &str,
        out: impl Write,
    ) -> Result<LayerDescriptor, InstallError> {
        let sources = wheels
            .iter_mut()
            .map(|p| WheelSource {
                archive: &mut p.wheel.archive,
                planned: &p.planned,
                hashes: &p.verified.hashes,
            })
            .collect();
        let result = self.layer.write_compressed(
            &mut KeyRanges::new(self.key_starts, sources),
            out,
            self.scheme.compression,
        );
        result.map_err(|e| write_error(what, wheels, e))
    }
}

/// What a file holds, for telling a same copy from a clash: its mode and sha256 (urlsafe
/// base64, as in RECORD). The same form as [`crate::layer_paths`] reads from a layer.
pub fn content_id(executable: bool, sha256_b64: &str) -> String {
    let mode = if executable { "x" } else { "-" };
    format!("{mode} {sha256_b64}")
}

pub fn symlink_id(target: &str) -> String {
    format!("-> {target}")
}

fn layer_error(wheel: &Wheel, entry: &str, source: LayerError) -> InstallError {
    InstallError::Layer {
        wheel: wheel.id.0.clone(),
        entry: entry.to_string(),
        source,
    }
}

/// Names the wheel entry behind a failed layer path when there is one.
fn write_error(what: &str, wheels: &[Prepared], source: LayerError) -> InstallError {
    let path = match &source {
        LayerError::Entry { path, .. } | LayerError::SizeMismatch { path, .. } => Some(path),
        _ => None,
    };
    let found = path.and_then(|path| {
        wheels
            .iter()
            .find_map(|w| w.planned.iter().find(|p| &p.dest == path).map(|p| (w, p)))
    });
    match found {
        Some((w, p)) => InstallError::Layer {
            wheel: w.wheel.id.0.clone(),
            entry: p.entry.clone(),
            source,
        },
        None => InstallError::Write {
            what: what.to_string(),
            source,
        },
    }
}
