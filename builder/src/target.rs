//! The target an environment is built for: Python version and platform. A build never needs
//! a matching local interpreter; everything is derived from this.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `X.Y`, the Python version an environment targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PythonVersion {
    pub major: u8,
    pub minor: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("invalid Python version {0:?}: expected X.Y, for example 3.11")]
    PythonVersion(String),
    #[error("unsupported platform {0:?}: expected linux/amd64 or linux/arm64")]
    Platform(String),
}

impl PythonVersion {
    pub fn new(major: u8, minor: u8) -> Self {
        PythonVersion { major, minor }
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for PythonVersion {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TargetError::PythonVersion(s.to_string());
        let (major, minor) = s.trim().split_once('.').ok_or_else(err)?;
        let major = major.parse().map_err(|_| err())?;
        let minor = minor.parse().map_err(|_| err())?;
        if major != 3 {
            return Err(err());
        }
        Ok(PythonVersion { major, minor })
    }
}

impl TryFrom<String> for PythonVersion {
    type Error = TargetError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PythonVersion> for String {
    fn from(value: PythonVersion) -> Self {
        value.to_string()
    }
}

/// CPU architecture of the target, named as OCI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The name used in wheel platform tags (`x86_64`, `aarch64`).
    pub fn wheel_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// `linux/amd64` or `linux/arm64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Platform {
    pub arch: Arch,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux/{}", self.arch.oci_name())
    }
}

impl FromStr for Platform {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let arch = match s.trim() {
            "linux/amd64" | "linux/x86_64" => Arch::Amd64,
            "linux/arm64" | "linux/aarch64" | "linux/arm64/v8" => Arch::Arm64,
            _ => return Err(TargetError::Platform(s.to_string())),
        };
        Ok(Platform { arch })
    }
}

impl TryFrom<String> for Platform {
    type Error = TargetError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Platform> for String {
    fn from(value: Platform) -> Self {
        value.to_string()
    }
}

/// The glibc level wheels may require: `manylinux_2_28` unless the base says otherwise.
pub const DEFAULT_GLIBC: (u16, u16) = (2, 28);

/// Python version, platform and glibc level: everything resolution and wheel choice depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub python: PythonVersion,
    pub platform: Platform,
    pub glibc: (u16, u16),
}

impl Target {
    pub fn new(python: PythonVersion, platform: Platform) -> Self {
        Target {
            python,
            platform,
            glibc: DEFAULT_GLIBC,
        }
    }

    /// The value of uv's `--python-platform`, e.g. `x86_64-manylinux_2_28`.
    pub fn uv_python_platform(&self) -> String {
        format!(
            "{}-manylinux_{}_{}",
            self.platform.arch.wheel_name(),
            self.glibc.0,
            self.glibc.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_versions() {
        assert_eq!("3.11".parse::<PythonVersion>().unwrap(), PythonVersion::new(3, 11));
        for bad in ["3", "3.x", "2.7", "", "3.11.2"] {
            assert!(bad.parse::<PythonVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn uv_platform_names_arch_and_glibc() {
        let t = Target::new(PythonVersion::new(3, 11), "linux/arm64".parse().unwrap());
        assert_eq!(t.uv_python_platform(), "aarch64-manylinux_2_28");
        assert!("windows/amd64".parse::<Platform>().is_err());
    }
}
