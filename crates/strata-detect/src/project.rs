//! The project being detected: its Python files (the walk respects `.gitignore`, with or
//! without git, and skips hidden directories and virtual environments), and which names are
//! its own modules.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a directory on `sys.path` makes importable.
#[derive(Debug, Default, Clone)]
pub struct DirModules {
    /// Modules (`x.py`, extension modules) and regular packages (`x/__init__.py`): these
    /// shadow installed distributions.
    pub regular: HashMap<String, PathBuf>,
    /// Directories holding Python files without `__init__.py`: namespace packages, which an
    /// installed distribution of the same name wins over.
    pub namespace: HashMap<String, PathBuf>,
}

impl DirModules {
    fn read(dir: &Path) -> DirModules {
        let mut modules = DirModules::default();
        let Ok(entries) = fs::read_dir(dir) else {
            return modules;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !is_identifier(name) {
                    continue;
                }
                if path.join("__init__.py").is_file() {
                    modules.regular.insert(name.to_string(), path);
                } else if holds_python(&path) {
                    modules.namespace.insert(name.to_string(), path);
                }
            } else if let Some(stem) = module_file_stem(name) {
                modules.regular.insert(stem.to_string(), path);
            }
        }
        modules
    }
}

/// `x.py`, `x.pyw`, `x.cpython-311-x86_64-linux-gnu.so` -> `x`.
fn module_file_stem(name: &str) -> Option<&str> {
    let is_module = [".py", ".pyw", ".so"].iter().any(|ext| name.ends_with(ext));
    let stem = name.split('.').next()?;
    (is_module && is_identifier(stem)).then_some(stem)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn holds_python(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".py")))
    })
}

/// The directories an import in a file may be found in besides the environment: the file's
/// own directory (a script's `sys.path[0]`), the project root and its `src/`.
pub struct Roots {
    root: PathBuf,
    cache: Mutex<HashMap<PathBuf, std::sync::Arc<DirModules>>>,
}

/// Where a project's own module is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Own {
    Regular(PathBuf),
    Namespace(PathBuf),
}

impl Roots {
    pub fn new(root: &Path) -> Roots {
        Roots {
            root: root.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn modules(&self, dir: &Path) -> std::sync::Arc<DirModules> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(dir.to_path_buf())
            .or_insert_with(|| std::sync::Arc::new(DirModules::read(dir)))
            .clone()
    }

    /// Whether `top` is the project's own when imported from `file`; regular modules
    /// anywhere come before namespace directories.
    pub fn own(&self, file: &Path, top: &str) -> Option<Own> {
        let mut dirs = vec![self.root.clone(), self.root.join("src")];
        if let Some(parent) = file.parent() {
            dirs.insert(0, parent.to_path_buf());
        }
        let modules: Vec<_> = dirs.iter().map(|d| self.modules(d)).collect();
        if let Some(path) = modules.iter().find_map(|m| m.regular.get(top)) {
            return Some(Own::Regular(path.clone()));
        }
        modules
            .iter()
            .find_map(|m| m.namespace.get(top))
            .map(|p| Own::Namespace(p.clone()))
    }
}

/// The Python files under `root`, sorted: `.gitignore`/`.ignore` rules apply (with or without
/// a git repository), hidden entries and virtual environments (`pyvenv.cfg`,
/// `site-packages`) are skipped.
pub fn python_files(root: &Path) -> Result<Vec<PathBuf>, ignore::Error> {
    let files = Mutex::new(Vec::new());
    let first_error = Mutex::new(None);
    ignore::WalkBuilder::new(root)
        .require_git(false)
        .filter_entry(|entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && is_environment(entry.path()))
        })
        .build_parallel()
        .run(|| {
            Box::new(|entry| {
                match entry {
                    Ok(entry) => {
                        let is_file = entry.file_type().is_some_and(|t| t.is_file());
                        let is_python = entry.path().extension().is_some_and(|e| e == "py");
                        if is_file && is_python {
                            let mut files = files.lock().unwrap_or_else(|e| e.into_inner());
                            files.push(entry.into_path());
                        }
                    }
                    Err(error) => {
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert(error);
                        return ignore::WalkState::Quit;
                    }
                }
                ignore::WalkState::Continue
            })
        });
    if let Some(error) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let mut files = files.into_inner().unwrap_or_else(|e| e.into_inner());
    files.sort();
    Ok(files)
}

/// A virtual environment or an installation tree: installed code, not the project's.
fn is_environment(dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, "site-packages" | "dist-packages" | "__pycache__")
        || dir.join("pyvenv.cfg").is_file()
        || dir.join("conda-meta").is_dir()
}

/// The files of the project's own module at `path` (a module file, or every Python file of a
/// package directory), out of `all` (the project's files, sorted).
pub fn files_of(path: &Path, all: &[PathBuf]) -> BTreeSet<PathBuf> {
    if path.is_file() {
        return BTreeSet::from([path.to_path_buf()]);
    }
    all.iter()
        .filter(|f| f.starts_with(path))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn walks_python_files_minus_ignored_and_environments() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "train.py",
            "pkg/__init__.py",
            "pkg/mod.py",
            "ignored/x.py",
            ".hidden/y.py",
            "venv/lib/python3.11/site-packages/z.py",
            "notes.txt",
        ] {
            write(&root.join(file), "");
        }
        write(&root.join("venv/pyvenv.cfg"), "home = /usr/bin\n");
        write(&root.join(".gitignore"), "ignored/\n");
        let files: Vec<String> = python_files(root)
            .unwrap()
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(files, ["pkg/__init__.py", "pkg/mod.py", "train.py"]);
    }

    #[test]
    fn own_modules_of_the_script_dir_and_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("helpers/__init__.py"), "");
        write(&root.join("config.py"), "");
        write(&root.join("nsdir/a.py"), "");
        write(&root.join("scripts/run.py"), "");
        write(&root.join("scripts/local_util.py"), "");
        write(&root.join("src/srcpkg/__init__.py"), "");
        write(&root.join("data/x.csv"), "");
        let roots = Roots::new(root);
        let script = root.join("scripts/run.py");
        let own = |top| roots.own(&script, top);
        assert_eq!(own("helpers"), Some(Own::Regular(root.join("helpers"))));
        assert_eq!(own("config"), Some(Own::Regular(root.join("config.py"))));
        assert_eq!(
            own("local_util"),
            Some(Own::Regular(root.join("scripts/local_util.py")))
        );
        assert_eq!(own("srcpkg"), Some(Own::Regular(root.join("src/srcpkg"))));
        assert_eq!(own("nsdir"), Some(Own::Namespace(root.join("nsdir"))));
        assert_eq!(own("data"), None);
        assert_eq!(own("numpy"), None);
        assert_eq!(roots.own(&root.join("train.py"), "local_util"), None);
    }
}
