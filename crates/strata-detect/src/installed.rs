//! The distributions installed in an environment's site-packages, from their `.dist-info`:
//! name, version, `Requires-Dist`, where they were installed from (`direct_url.json`), and
//! which modules they provide (`RECORD`, `top_level.txt`, and the paths of editable installs'
//! `.pth` files), so that an import maps to its distribution with no table to maintain.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;
use strata_python::PackageName;

/// How deep module paths are indexed: enough to tell namespace packages apart
/// (`google.cloud.storage` from `google.cloud.bigquery`).
const INDEX_DEPTH: usize = 3;

/// One installed distribution.
#[derive(Debug, Clone)]
pub struct Dist {
    pub name: PackageName,
    /// The version as its metadata says.
    pub version: String,
    /// `Requires-Dist` values, unparsed (parsed when the closure reaches them).
    pub requires: Vec<String>,
    /// Installed from a local path or as editable.
    pub local: Option<LocalOrigin>,
    pub dist_info: PathBuf,
}

/// Where a local distribution's code is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOrigin {
    /// The path of its `file://` URL (a directory, or a wheel or sdist file).
    pub path: PathBuf,
    pub editable: bool,
}

/// Every distribution of an environment, with the modules each provides.
#[derive(Debug, Default)]
pub struct Installed {
    pub dists: Vec<Dist>,
    by_name: HashMap<PackageName, usize>,
    /// Dotted module paths (and their prefixes up to [`INDEX_DEPTH`]) to the distributions
    /// that install them.
    modules: HashMap<String, Vec<usize>>,
}

/// A `.dist-info` directory that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct BadDistInfo {
    pub path: PathBuf,
    pub message: String,
}

impl Installed {
    /// Reads every `*.dist-info` in `site_packages` (earlier directories win, as on
    /// `sys.path`). Unreadable ones are returned apart, to be reported.
    pub fn scan(site_packages: &[PathBuf]) -> (Installed, Vec<BadDistInfo>) {
        let mut found = Vec::new();
        for site in site_packages {
            let Ok(entries) = fs::read_dir(site) else {
                continue;
            };
            let mut infos: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "dist-info") && p.is_dir())
                .collect();
            infos.sort();
            found.extend(infos.into_iter().map(|info| (site.clone(), info)));
        }
        let read: Vec<Result<(Dist, HashSet<String>), BadDistInfo>> = found
            .par_iter()
            .map(|(site, info)| read_dist(site, info))
            .collect();
        let mut installed = Installed::default();
        let mut bad = Vec::new();
        for result in read {
            match result {
                Ok((dist, modules)) => installed.add(dist, modules),
                Err(e) => bad.push(e),
            }
        }
        (installed, bad)
    }

    fn add(&mut self, dist: Dist, modules: HashSet<String>) {
        if self.by_name.contains_key(&dist.name) {
            return;
        }
        let id = self.dists.len();
        self.by_name.insert(dist.name.clone(), id);
        for module in modules {
            let parts: Vec<&str> = module.split('.').collect();
            for depth in 1..=parts.len().min(INDEX_DEPTH) {
                let owners = self.modules.entry(parts[..depth].join(".")).or_default();
                if !owners.contains(&id) {
                    owners.push(id);
                }
            }
        }
        self.dists.push(dist);
    }

    pub fn get(&self, name: &PackageName) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The distributions providing the dotted module `module`: those of its longest indexed
    /// prefix. Empty when nothing installed provides it.
    pub fn owners(&self, module: &str) -> &[usize] {
        let parts: Vec<&str> = module.split('.').collect();
        (1..=parts.len().min(INDEX_DEPTH))
            .rev()
            .find_map(|depth| self.modules.get(&parts[..depth].join(".")))
            .map_or(&[], Vec::as_slice)
    }
}

fn bad(path: &Path, message: impl Into<String>) -> BadDistInfo {
    BadDistInfo {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_dist(site: &Path, info: &Path) -> Result<(Dist, HashSet<String>), BadDistInfo> {
    let metadata_path = info.join("METADATA");
    let metadata = fs::read_to_string(&metadata_path)
        .map_err(|e| bad(&metadata_path, format!("cannot read: {e}")))?;
    let headers = Headers::parse(&metadata);
    let raw_name = headers
        .first("Name")
        .ok_or_else(|| bad(&metadata_path, "no Name"))?;
    let name =
        PackageName::new(raw_name).map_err(|e| bad(&metadata_path, format!("bad Name: {e}")))?;
    let version = headers
        .first("Version")
        .ok_or_else(|| bad(&metadata_path, "no Version"))?
        .to_string();
    let requires = headers.all("Requires-Dist").map(str::to_string).collect();
    let local = read_direct_url(info);
    let mut modules = HashSet::new();
    if let Ok(record) = fs::read_to_string(info.join("RECORD")) {
        for path in record.lines().filter_map(record_path) {
            if path.ends_with(".pth") && !path.contains('/') {
                modules.extend(pth_modules(site, &site.join(path)));
            } else if let Some(module) = module_of(path) {
                modules.insert(module);
            }
        }
    }
    if let Ok(top_level) = fs::read_to_string(info.join("top_level.txt")) {
        modules.extend(
            top_level
                .lines()
                .map(|l| l.trim().replace('/', "."))
                .filter(|l| !l.is_empty()),
        );
    }
    let dist = Dist {
        name,
        version,
        requires,
        local,
        dist_info: info.to_path_buf(),
    };
    Ok((dist, modules))
}

/// The headers of a core metadata file (RFC 822 style, up to the first blank line).
struct Headers<'a>(Vec<(&'a str, String)>);

impl<'a> Headers<'a> {
    fn parse(text: &'a str) -> Headers<'a> {
        let mut headers: Vec<(&str, String)> = Vec::new();
        for line in text.lines() {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                headers.push((key.trim(), value.trim().to_string()));
            }
        }
        Headers(headers)
    }

    fn first<'s>(&'s self, key: &'s str) -> Option<&'s str> {
        self.all(key).next()
    }

    fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// The path field of a RECORD line (CSV; a quoted path may hold commas).
fn record_path(line: &str) -> Option<&str> {
    let path = match line.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => line.split(',').next()?,
    };
    (!path.is_empty()).then_some(path)
}

/// The dotted module a file installed in site-packages provides, if it is one: `a/b/c.py` ->
/// `a.b.c`, `a/__init__.py` -> `a`, `_x.cpython-311-x86_64-linux-gnu.so` -> `_x`. Scripts
/// and data outside site-packages (`../../bin/x`), metadata and caches provide none.
fn module_of(path: &str) -> Option<String> {
    if path.starts_with("..") || path.starts_with('/') || path.contains("__pycache__") {
        return None;
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop()?;
    if parts
        .first()
        .is_some_and(|d| d.ends_with(".dist-info") || d.ends_with(".data"))
    {
        return None;
    }
    let is_module = [".py", ".pyi", ".so", ".pyd"]
        .iter()
        .any(|ext| file.ends_with(ext));
    if !is_module {
        return None;
    }
    let stem = file.split('.').next()?;
    if stem != "__init__" {
        parts.push(stem);
    }
    let valid = !parts.is_empty()
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
    valid.then(|| parts.join("."))
}

/// The top-level modules reachable through a `.pth` file's path lines (how editable
/// installs put their source directory on `sys.path`). `import` lines are code, not paths.
fn pth_modules(site: &Path, pth: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(pth) else {
        return Vec::new();
    };
    let mut modules = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("import") {
            continue;
        }
        let dir = site.join(line);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_dir() && path.join("__init__.py").is_file() {
                modules.push(name.to_string());
            } else if let Some(stem) = name.strip_suffix(".py") {
                if stem != "setup" {
                    modules.push(stem.to_string());
                }
            }
        }
    }
    modules
}

/// `direct_url.json` (PEP 610).
#[derive(Deserialize)]
struct DirectUrl {
    url: String,
    #[serde(default)]
    dir_info: Option<DirInfo>,
}

#[derive(Deserialize)]
struct DirInfo {
    #[serde(default)]
    editable: bool,
}

/// A `file://` origin (a local directory, wheel or sdist, editable or not). Other URLs (an
/// archive or a repository on the network) can be fetched again, so they are not local.
fn read_direct_url(info: &Path) -> Option<LocalOrigin> {
    let text = fs::read_to_string(info.join("direct_url.json")).ok()?;
    let direct: DirectUrl = serde_json::from_str(&text).ok()?;
    let url = url::Url::parse(&direct.url).ok()?;
    if url.scheme() != "file" {
        return None;
    }
    Some(LocalOrigin {
        path: url.to_file_path().ok()?,
        editable: direct.dir_info.is_some_and(|d| d.editable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_of_installed_files() {
        let cases = [
            ("sklearn/__init__.py", Some("sklearn")),
            (
                "sklearn/linear_model/_base.py",
                Some("sklearn.linear_model._base"),
            ),
            (
                "yaml/_yaml.cpython-311-x86_64-linux-gnu.so",
                Some("yaml._yaml"),
            ),
            ("six.py", Some("six")),
            ("typing_extensions.pyi", Some("typing_extensions")),
            ("PyYAML-6.0.dist-info/METADATA", None),
            ("numpy-1.0.data/scripts/f2py", None),
            ("../../../bin/tool", None),
            ("pkg/__pycache__/x.cpython-311.pyc", None),
            ("pkg/data.json", None),
            ("distutils-precedence.pth", None),
        ];
        for (path, want) in cases {
            assert_eq!(module_of(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn record_paths() {
        assert_eq!(record_path("a/b.py,sha256=x,1"), Some("a/b.py"));
        assert_eq!(record_path("\"a,b/c.py\",sha256=x,1"), Some("a,b/c.py"));
        assert_eq!(record_path(""), None);
    }

    #[test]
    fn metadata_headers() {
        let text = "Metadata-Version: 2.1\nName: Scikit_Widget\nVersion: 1.0\nRequires-Dist: alpha>=1.0\nRequires-Dist: gamma; extra == 'plot'\nDescription: a\n  continued\n\nBody: not a header\n";
        let h = Headers::parse(text);
        assert_eq!(h.first("name"), Some("Scikit_Widget"));
        assert_eq!(
            h.all("Requires-Dist").collect::<Vec<_>>(),
            ["alpha>=1.0", "gamma; extra == 'plot'"]
        );
        assert_eq!(h.first("Description"), Some("a continued"));
        assert_eq!(h.first("Body"), None);
    }
}
