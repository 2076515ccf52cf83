//! The target an environment is built for: Python version and platform. A build never needs
//! a matching local interpreter; everything is derived from this.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::wheel_name::WheelFilename;

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

impl Target {
    /// The PEP 508 marker values of CPython `X.Y` on Linux for this platform: what the
    /// markers of a lock file are evaluated against. The patch level is unknown from the
    /// target alone, so `python_full_version` is `X.Y.0`.
    pub fn marker_environment(&self) -> crate::MarkerEnvironment {
        let version = format!("{}.{}", self.python.major, self.python.minor);
        crate::MarkerEnvironment {
            implementation_name: "cpython".into(),
            implementation_version: format!("{version}.0"),
            os_name: "posix".into(),
            platform_machine: self.platform.arch.wheel_name().into(),
            platform_python_implementation: "CPython".into(),
            platform_release: String::new(),
            platform_system: "Linux".into(),
            platform_version: String::new(),
            python_full_version: format!("{version}.0"),
            python_version: version,
            sys_platform: "linux".into(),
        }
    }
}

/// One `(python, abi, platform)` wheel tag.
pub type WheelTag = (String, String, String);

impl Target {
    /// `cp311 manylinux_2_28 x86_64`: how error messages name the target of a wheel search.
    pub fn wheel_tags_summary(&self) -> String {
        format!(
            "cp{}{} manylinux_{}_{} {}",
            self.python.major,
            self.python.minor,
            self.glibc.0,
            self.glibc.1,
            self.platform.arch.wheel_name()
        )
    }

    /// The wheel tags a CPython `X.Y` on this platform accepts, most preferred first, in the
    /// order of `packaging.tags.sys_tags` (interpreter-specific ABI, abi3, none; then older
    /// abi3; then pure `py3Y`/`py3` tags; `any` last).
    pub fn compatible_tags(&self) -> Vec<WheelTag> {
        let platforms = self.platform_tags();
        let interp = format!("cp{}{}", self.python.major, self.python.minor);
        let mut tags = Vec::new();
        let mut push_all = |py: &str, abi: &str, plats: &[String]| {
            for plat in plats {
                tags.push((py.to_string(), abi.to_string(), plat.clone()));
            }
        };
        for abi in [interp.as_str(), "abi3", "none"] {
            push_all(&interp, abi, &platforms);
        }
        // abi3 wheels built for an older CPython 3 run on newer ones.
        for minor in (2..self.python.minor).rev() {
            push_all(
                &format!("cp{}{minor}", self.python.major),
                "abi3",
                &platforms,
            );
        }
        let py_versions = self.py_interpreter_range();
        for py in &py_versions {
            push_all(py, "none", &platforms);
        }
        let any = ["any".to_string()];
        push_all(&interp, "none", &any);
        for py in &py_versions {
            push_all(py, "none", &any);
        }
        tags
    }

    /// How well a wheel fits this target: `None` when it cannot be installed here, else a
    /// priority where higher is better (more specific tags rank higher). A wheel with a
    /// compressed tag set ranks by its best tag.
    pub fn wheel_priority(&self, wheel: &WheelFilename) -> Option<u32> {
        let tags = self.compatible_tags();
        let total = tags.len();
        wheel
            .tags()
            .filter_map(|(py, abi, plat)| {
                tags.iter()
                    .position(|(p, a, pl)| p == py && a == abi && pl == plat)
            })
            .min()
            .and_then(|index| u32::try_from(total - index).ok())
    }

    /// Platform tags, most specific first: `manylinux_2_Y_ARCH` from the target's glibc down to
    /// the oldest glibc the architecture had, each legacy alias (manylinux2014 = 2_17,
    /// manylinux2010 = 2_12, manylinux1 = 2_5) right after its `manylinux_2_Y` twin, then
    /// `linux_ARCH`.
    fn platform_tags(&self) -> Vec<String> {
        let arch = self.platform.arch.wheel_name();
        // aarch64 wheels start at manylinux2014; x86_64 ones at manylinux1.
        let oldest_minor = match self.platform.arch {
            Arch::Amd64 => 5,
            Arch::Arm64 => 17,
        };
        let mut tags = Vec::new();
        if self.glibc.0 == 2 {
            for minor in (oldest_minor..=self.glibc.1).rev() {
                tags.push(format!("manylinux_2_{minor}_{arch}"));
                let legacy = match (minor, self.platform.arch) {
                    (17, _) => Some("manylinux2014"),
                    (12, Arch::Amd64) => Some("manylinux2010"),
                    (5, Arch::Amd64) => Some("manylinux1"),
                    _ => None,
                };
                if let Some(legacy) = legacy {
                    tags.push(format!("{legacy}_{arch}"));
                }
            }
        }
        tags.push(format!("linux_{arch}"));
        tags
    }

    /// `py3Y`, `py3`, then `py3(Y-1)` down to `py30`, as packaging orders them.
    fn py_interpreter_range(&self) -> Vec<String> {
        let major = self.python.major;
        let mut out = vec![
            format!("py{major}{}", self.python.minor),
            format!("py{major}"),
        ];
        for minor in (0..self.python.minor).rev() {
            out.push(format!("py{major}{minor}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_versions() {
        assert_eq!(
            "3.11".parse::<PythonVersion>().unwrap(),
            PythonVersion::new(3, 11)
        );
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

    fn t311() -> Target {
        Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap())
    }

    fn prio(t: &Target, filename: &str) -> Option<u32> {
        t.wheel_priority(&WheelFilename::parse(filename).unwrap())
    }

    #[test]
    fn accepts_wheels_the_target_can_install() {
        let t = t311();
        for ok in [
            "a-1-py3-none-any.whl",
            "a-1-py311-none-any.whl",
            "a-1-py2.py3-none-any.whl",
            "a-1-cp311-none-any.whl",
            "a-1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "a-1-cp311-cp311-manylinux2014_x86_64.whl",
            "a-1-cp311-cp311-manylinux2010_x86_64.whl",
            "a-1-cp311-cp311-manylinux1_x86_64.whl",
            "a-1-cp38-abi3-manylinux_2_17_x86_64.whl",
            "a-1-cp311-abi3-manylinux_2_17_x86_64.whl",
            "a-1-py3-none-manylinux_2_17_x86_64.whl",
            "a-1-cp311-cp311-linux_x86_64.whl",
        ] {
            assert!(prio(&t, ok).is_some(), "{ok}");
        }
    }

    #[test]
    fn rejects_wheels_the_target_cannot_install() {
        let t = t311();
        for bad in [
            "a-1-cp312-cp312-manylinux_2_17_x86_64.whl",
            "a-1-cp310-cp310-manylinux_2_17_x86_64.whl",
            "a-1-cp312-abi3-manylinux_2_17_x86_64.whl",
            "a-1-py2-none-any.whl",
            "a-1-py312-none-any.whl",
            "a-1-cp311-cp311-manylinux_2_34_x86_64.whl",
            "a-1-cp311-cp311-manylinux_2_17_aarch64.whl",
            "a-1-cp311-cp311-musllinux_1_2_x86_64.whl",
            "a-1-cp311-cp311-win_amd64.whl",
            "a-1-cp311-cp311-macosx_11_0_arm64.whl",
            "a-1-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
            "a-1-cp311-cp311d-manylinux_2_17_x86_64.whl",
        ] {
            assert_eq!(prio(&t, bad), None, "{bad}");
        }
    }

    #[test]
    fn more_specific_wheels_rank_higher() {
        let t = t311();
        let order = [
            "a-1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "a-1-cp311-cp311-manylinux_2_17_x86_64.whl",
            "a-1-cp311-cp311-manylinux1_x86_64.whl",
            "a-1-cp311-cp311-linux_x86_64.whl",
            "a-1-cp311-abi3-manylinux_2_17_x86_64.whl",
            "a-1-cp311-none-manylinux_2_17_x86_64.whl",
            "a-1-cp310-abi3-manylinux_2_28_x86_64.whl",
            "a-1-cp38-abi3-manylinux_2_28_x86_64.whl",
            "a-1-py311-none-manylinux_2_17_x86_64.whl",
            "a-1-py3-none-manylinux_2_17_x86_64.whl",
            "a-1-cp311-none-any.whl",
            "a-1-py311-none-any.whl",
            "a-1-py3-none-any.whl",
            "a-1-py30-none-any.whl",
        ];
        let prios: Vec<u32> = order.iter().map(|f| prio(&t, f).unwrap()).collect();
        for (pair, names) in prios.windows(2).zip(order.windows(2)) {
            assert!(pair[0] > pair[1], "{} should beat {}", names[0], names[1]);
        }
    }

    #[test]
    fn compressed_tag_sets_rank_by_their_best_tag() {
        let t = t311();
        assert_eq!(
            prio(
                &t,
                "a-1-cp311-cp311-manylinux_2_5_x86_64.manylinux_2_28_x86_64.whl"
            ),
            prio(&t, "a-1-cp311-cp311-manylinux_2_28_x86_64.whl")
        );
        assert_eq!(
            prio(
                &t,
                "a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
            ),
            prio(&t, "a-1-cp311-cp311-manylinux_2_17_x86_64.whl")
        );
    }

    #[test]
    fn glibc_level_and_arch_come_from_the_target() {
        let mut arm = Target::new(PythonVersion::new(3, 12), "linux/arm64".parse().unwrap());
        assert!(prio(&arm, "a-1-cp312-cp312-manylinux2014_aarch64.whl").is_some());
        assert!(prio(&arm, "a-1-cp312-cp312-manylinux_2_28_aarch64.whl").is_some());
        // manylinux1/2010 never existed for aarch64.
        assert_eq!(prio(&arm, "a-1-cp312-cp312-manylinux1_aarch64.whl"), None);
        assert_eq!(
            prio(&arm, "a-1-cp312-cp312-manylinux_2_28_x86_64.whl"),
            None
        );
        arm.glibc = (2, 17);
        assert_eq!(
            prio(&arm, "a-1-cp312-cp312-manylinux_2_28_aarch64.whl"),
            None
        );
        assert!(prio(&arm, "a-1-cp312-cp312-manylinux_2_17_aarch64.whl").is_some());
    }

    #[test]
    fn summary_names_interpreter_glibc_and_arch() {
        assert_eq!(t311().wheel_tags_summary(), "cp311 manylinux_2_28 x86_64");
    }
}
