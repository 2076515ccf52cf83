//! `.pyc` files for a wheel's modules (`strata build --compile`), written into the same layer
//! as the modules.
//!
//! Only CPython compiles Python, so an interpreter of the target's version (`X.Y`: the
//! bytecode format changes between minor versions only) compiles them here, on the host. They
//! are PEP 552 unchecked-hash pycs: no source mtime inside (a timestamp pyc would embed the
//! layer's fixed mtime and be rewritten by any import that saw another), and never checked
//! against the source, so the interpreter in the image loads them as they are and never
//! rewrites them. `dfile` is the module's path in the image, as tracebacks should show it, and
//! `PYTHONHASHSEED=0` keeps the marshalled constants (sets) in one order: the same wheel
//! gives the same bytes on every build.
//!
//! A module that does not compile (a Python 2 leftover, a template) gets no pyc, as with pip.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata_python::PythonVersion;

/// The interpreter that writes the pycs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bytecode {
    /// A CPython of the target's minor version.
    pub python: PathBuf,
}

/// Why no pycs could be written (not: why one module did not compile).
#[derive(Debug, thiserror::Error)]
pub enum BytecodeError {
    #[error("could not {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{python} is not CPython {version}: it says {found:?}")]
    WrongVersion {
        python: String,
        version: PythonVersion,
        found: String,
    },
    #[error("{python} failed compiling the modules of {wheel}: {stderr}")]
    Failed {
        python: String,
        wheel: String,
        stderr: String,
    },
}

/// Reads `(layer path of the .py, its source)` lines from stdin-named files and writes each
/// pyc beside its source in the work directory; prints the pyc's path relative to the work
/// directory for every module that compiled.
const COMPILE: &str = r#"
import importlib.util, py_compile, sys
work, want = sys.argv[1], sys.argv[2]
found = "%d.%d" % sys.version_info[:2]
if sys.implementation.name != "cpython" or found != want:
    sys.stderr.write("%s %s\n" % (sys.implementation.name, found))
    sys.exit(3)
for rel in sys.stdin.read().split("\0"):
    if not rel:
        continue
    src = work + "/" + rel
    pyc = importlib.util.cache_from_source(src)
    try:
        py_compile.compile(src, cfile=pyc, dfile="/" + rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except (py_compile.PyCompileError, ValueError, SyntaxError):
        continue
    print(pyc[len(work) + 1:])
"#;

impl Bytecode {
    /// The pycs of `modules` (`(layer path, source)`, layer paths relative like
    /// `opt/venv/lib/python3.11/site-packages/x/__init__.py`), as `(layer path, bytes)`,
    /// sorted by path.
    pub fn compile(
        &self,
        version: PythonVersion,
        wheel: &str,
        modules: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, Vec<u8>)>, BytecodeError> {
        if modules.is_empty() {
            return Ok(Vec::new());
        }
        let io = |action| move |source| BytecodeError::Io { action, source };
        let work = tempfile::tempdir().map_err(io("create a directory for compiling"))?;
        let mut list = Vec::new();
        for (path, source) in modules {
            let file = work.path().join(path);
            if let Some(dir) = file.parent() {
                fs::create_dir_all(dir).map_err(io("create a directory for compiling"))?;
            }
            fs::write(&file, source).map_err(io("write a module to compile"))?;
            list.extend_from_slice(path.as_bytes());
            list.push(0);
        }
        let pycs = self.run(version, wheel, work.path(), &list)?;
        let mut out = Vec::with_capacity(pycs.len());
        for rel in pycs {
            let bytes = fs::read(work.path().join(&rel)).map_err(io("read a compiled module"))?;
            out.push((rel, bytes));
        }
        out.sort();
        Ok(out)
    }

    fn run(
        &self,
        version: PythonVersion,
        wheel: &str,
        work: &Path,
        list: &[u8],
    ) -> Result<Vec<String>, BytecodeError> {
        let io = |action| move |source| BytecodeError::Io { action, source };
        let mut child = Command::new(&self.python)
            .args(["-I", "-S", "-c", COMPILE])
            .arg(work)
            .arg(version.to_string())
            .env("PYTHONHASHSEED", "0")
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("run the Python that compiles modules"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(list)
                .map_err(io("give the modules to compile"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(io("run the Python that compiles modules"))?;
        let python = self.python.display().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect()),
            Some(3) => Err(BytecodeError::WrongVersion {
                python,
                version,
                found: stderr,
            }),
            _ => Err(BytecodeError::Failed {
                python,
                wheel: wheel.to_string(),
                stderr,
            }),
        }
    }
}
