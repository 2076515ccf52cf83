//! Where an installed wheel's files go inside the image: a virtual environment at a fixed
//! prefix. Layer paths are relative (`opt/venv/...`); interpreter paths are absolute.

use crate::bytecode::Bytecode;
use crate::layer::{LayerCompression, LAYER_FORMAT_VERSION};
use strata_python::PackageName;
use strata_python::PythonVersion;

use crate::InstallError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstallScheme {
    /// Absolute venv prefix, e.g. `/opt/venv`.
    pub venv: String,
    pub python: PythonVersion,
    /// How the layers are compressed.
    pub compression: LayerCompression,
    /// Write `.pyc` files beside the modules (`--compile`), with this interpreter.
    pub bytecode: Option<Bytecode>,
}

impl InstallScheme {
    pub const DEFAULT_VENV: &'static str = "/opt/venv";

    /// The default scheme: a venv at `/opt/venv`.
    pub fn new(python: PythonVersion) -> Self {
        InstallScheme {
            venv: Self::DEFAULT_VENV.to_string(),
            python,
            compression: LayerCompression::Gzip,
            bytecode: None,
        }
    }

    /// This scheme with `.pyc` files written by `bytecode` (see [`crate::bytecode`]).
    pub fn with_bytecode(mut self, bytecode: Bytecode) -> Self {
        self.bytecode = Some(bytecode);
        self
    }

    /// This scheme with its layers compressed by `compression`.
    pub fn with_compression(mut self, compression: LayerCompression) -> Self {
        self.compression = compression;
        self
    }

    /// The venv must be a plain absolute path: it becomes layer paths and shebangs.
    pub fn validate(&self) -> Result<(), InstallError> {
        let err = |reason: &str| {
            Err(InstallError::Scheme(format!(
                "venv {:?} {reason}",
                self.venv
            )))
        };
        let Some(rel) = self.venv.strip_prefix('/') else {
            return err("is not absolute");
        };
        if rel.is_empty() || rel.ends_with('/') {
            return err("must name a directory below / without a trailing '/'");
        }
        let bad_component = rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
        if bad_component {
            return err("has an empty, '.' or '..' component");
        }
        let bad_char = self
            .venv
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
        if bad_char {
            return err("contains whitespace or control characters (it goes in shebangs)");
        }
        Ok(())
    }

    /// The venv as a layer path (`opt/venv`).
    pub fn root(&self) -> &str {
        self.venv.trim_start_matches('/')
    }

    pub fn site_packages(&self) -> String {
        format!("{}/lib/python{}/site-packages", self.root(), self.python)
    }

    pub fn scripts(&self) -> String {
        format!("{}/bin", self.root())
    }

    pub fn data(&self) -> String {
        self.root().to_string()
    }

    /// pip's `include/site/pythonX.Y/<name>`, with the normalised name so the same wheel
    /// always lands in the same place.
    pub fn headers(&self, name: &PackageName) -> String {
        format!(
            "{}/include/site/python{}/{}",
            self.root(),
            self.python,
            name
        )
    }

    /// The interpreter written into shebangs.
    pub fn interpreter(&self) -> String {
        format!("{}/bin/python", self.venv)
    }

    /// Identifies everything that decides a wheel layer's bytes besides the wheel itself:
    /// the prefix, the Python version, the layer format, the compressor and whether pycs are
    /// written (not by which interpreter: any CPython X.Y writes the same bytes).
    pub fn id(&self) -> String {
        let pyc = match self.bytecode {
            Some(_) => ";pyc=unchecked-hash",
            None => "",
        };
        format!(
            "venv={};python={};layer-format={};compression={}{pyc}",
            self.venv,
            self.python,
            LAYER_FORMAT_VERSION,
            self.compression.id()
        )
    }
}

/// The path of `to` relative to the directory `from` (both relative layer paths), as pip
/// writes RECORD entries outside site-packages (`../../../bin/foo`).
pub fn relative_to(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').collect();
    let to: Vec<&str> = to.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_default_scheme() {
        let s = InstallScheme::new(PythonVersion::new(3, 11));
        s.validate().unwrap();
        assert_eq!(s.site_packages(), "opt/venv/lib/python3.11/site-packages");
        assert_eq!(s.scripts(), "opt/venv/bin");
        assert_eq!(s.data(), "opt/venv");
        let name = PackageName::new("Foo_Bar").unwrap();
        assert_eq!(s.headers(&name), "opt/venv/include/site/python3.11/foo-bar");
        assert_eq!(s.interpreter(), "/opt/venv/bin/python");
        assert!(s.id().contains("venv=/opt/venv;python=3.11;layer-format=3"));
        let zstd = s.clone().with_compression(LayerCompression::Zstd);
        assert_ne!(
            s.id(),
            zstd.id(),
            "the layer index must tell compressions apart"
        );
        let pyc = s.clone().with_bytecode(Bytecode {
            python: "python3.11".into(),
        });
        assert!(pyc.id().ends_with(";pyc=unchecked-hash"), "{}", pyc.id());
    }

    #[test]
    fn rejects_odd_venvs() {
        for venv in [
            "opt/venv",
            "/",
            "/opt/../x",
            "/opt/venv/",
            "/opt/my venv",
            "/a//b",
        ] {
            let s = InstallScheme {
                venv: venv.to_string(),
                python: PythonVersion::new(3, 11),
                compression: LayerCompression::Gzip,
                bytecode: None,
            };
            assert!(s.validate().is_err(), "{venv}");
        }
    }

    #[test]
    fn relative_paths_like_pip() {
        let sp = "opt/venv/lib/python3.11/site-packages";
        assert_eq!(relative_to(sp, "opt/venv/bin/foo"), "../../../bin/foo");
        assert_eq!(relative_to(sp, &format!("{sp}/pkg/a.py")), "pkg/a.py");
        assert_eq!(relative_to(sp, "opt/venv/share/x"), "../../../share/x");
    }
}
