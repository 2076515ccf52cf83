//! Tiers: the size of a job. A tier names the CPUs, memory and GPUs one job of it gets, and
//! everything the scheduler counts (node capacity, what a running job holds) is a
//! [`Resources`].
//!
//! Built-in tiers (each key may be overridden in `[tiers.NAME]`):
//!
//! | tier | CPUs | memory | GPUs |
//! |------|------|--------|------|
//! | cpu  | 2    | 4 GiB  | 0    |
//! | gpu1 | 8    | 32 GiB | 1    |
//! | gpu2 | 16   | 64 GiB | 2    |
//! | gpu8 | 64   | 256 GiB| 8    |
//!
//! GPU tiers get 8 CPUs and 32 GiB per GPU: the usual shape of a GPU server (8 GPUs, 64+
//! cores, 512 GiB+) divided by its GPUs, so that a full server is exactly one gpu8 job.
//! A tier defined in the file that is not built in takes the `cpu` tier's values for the keys
//! it leaves out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// CPUs (in thousandths), memory (bytes) and GPUs: what a job needs or a node has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub millicpus: u64,
    pub memory: u64,
    pub gpus: u32,
}

/// What one second of running costs a user's fair share, per CPU and per GPU: a GPU counts
/// as 8 CPUs, the CPUs that come with it in a GPU tier, so that a gpu1 job costs about twice
/// its CPUs alone and a GPU-hour is never cheaper than the CPUs it keeps busy.
const GPU_WEIGHT: f64 = 8.0;

impl Resources {
    pub fn new(cpus: f64, memory: u64, gpus: u32) -> Resources {
        Resources {
            millicpus: (cpus * 1000.0).round() as u64,
            memory,
            gpus,
        }
    }

    /// True when `self` fits inside `free` in every dimension.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.millicpus <= free.millicpus && self.memory <= free.memory && self.gpus <= free.gpus
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_add(other.millicpus),
            memory: self.memory.saturating_add(other.memory),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_sub(other.millicpus),
            memory: self.memory.saturating_sub(other.memory),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// Fair-share cost of one second: CPUs plus 8 per GPU (memory is not charged).
    pub fn charge_rate(&self) -> f64 {
        self.millicpus as f64 / 1000.0 + GPU_WEIGHT * f64::from(self.gpus)
    }

    /// "8 CPUs, 32 GiB and 1 GPU".
    pub fn describe(&self) -> String {
        let mut parts = vec![cpus_phrase(self.millicpus), format_memory(self.memory)];
        if self.gpus > 0 {
            parts.push(gpus_phrase(self.gpus));
        }
        let last = parts.pop().unwrap_or_default();
        if parts.is_empty() {
            last
        } else {
            format!("{} and {last}", parts.join(", "))
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// "1 CPU", "2 CPUs", "0.5 CPUs".
pub fn cpus_phrase(millicpus: u64) -> String {
    let number = format_cpus(millicpus);
    if millicpus == 1000 {
        "1 CPU".into()
    } else {
        format!("{number} CPUs")
    }
}

/// "1 GPU", "8 GPUs".
pub fn gpus_phrase(gpus: u32) -> String {
    if gpus == 1 {
        "1 GPU".into()
    } else {
        format!("{gpus} GPUs")
    }
}

/// "2", "0.5", "1.25".
pub fn format_cpus(millicpus: u64) -> String {
    if millicpus.is_multiple_of(1000) {
        return (millicpus / 1000).to_string();
    }
    let text = format!("{}.{:03}", millicpus / 1000, millicpus % 1000);
    text.trim_end_matches('0').to_string()
}

/// Bytes in binary units as people read them: "4 GiB", "512 MiB", "1.5 GiB".
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid memory size {0:?}: expected a whole number with a unit K, M, G or T (binary: 4G = 4 GiB), e.g. 512M or 32G")]
pub struct MemoryError(pub String);

/// "4G", "512M", "32GiB", "1T", "1048576" (bytes). Units are binary (`G` = GiB), as in
/// cgroups and container runtimes.
pub fn parse_memory(text: &str) -> Result<u64, MemoryError> {
    let err = || MemoryError(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| err())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(err()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(err)
}

/// A memory size in a config file: an integer (bytes) or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory(pub u64);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Memory(bytes)),
            Raw::Text(text) => parse_memory(&text)
                .map(Memory)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A CPU count in a config file: a positive number (fractions allowed, to a thousandth).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cpus(pub f64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !(value.is_finite() && value >= 0.001) {
            return Err(serde::de::Error::custom(format!(
                "{value} is not a CPU count: expected a positive number such as 2 or 0.5"
            )));
        }
        Ok(Cpus(value))
    }
}

/// One `[tiers.NAME]` section as written; missing keys come from the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSection {
    pub cpus: Option<Cpus>,
    pub memory: Option<Memory>,
    pub gpus: Option<u32>,
}

const GIB: u64 = 1 << 30;

/// The built-in tiers.
pub fn default_tiers() -> BTreeMap<String, Resources> {
    let per_gpu = |n: u32| Resources::new(8.0 * f64::from(n), 32 * GIB * u64::from(n), n);
    BTreeMap::from([
        ("cpu".to_string(), Resources::new(2.0, 4 * GIB, 0)),
        ("gpu1".to_string(), per_gpu(1)),
        ("gpu2".to_string(), per_gpu(2)),
        ("gpu8".to_string(), per_gpu(8)),
    ])
}

/// The built-in tiers with the file's sections applied key by key.
pub fn resolve_tiers(sections: BTreeMap<String, TierSection>) -> BTreeMap<String, Resources> {
    let mut tiers = default_tiers();
    let fallback = tiers.get("cpu").copied().unwrap_or_default();
    for (name, section) in sections {
        let base = tiers.get(&name).copied().unwrap_or(fallback);
        let resources = Resources {
            millicpus: section
                .cpus
                .map(|c| Resources::new(c.0, 0, 0).millicpus)
                .unwrap_or(base.millicpus),
            memory: section.memory.map(|m| m.0).unwrap_or(base.memory),
            gpus: section.gpus.unwrap_or(base.gpus),
        };
        tiers.insert(name, resources);
    }
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_in_binary_units() {
        assert_eq!(parse_memory("4G"), Ok(4 * GIB));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("32GiB"), Ok(32 * GIB));
        assert_eq!(parse_memory("1024"), Ok(1024));
        for bad in ["", "G", "1.5G", "-1G", "4X", "99999999999T"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_read_like_words() {
        assert_eq!(format_memory(4 * GIB), "4 GiB");
        assert_eq!(format_memory(3 * GIB / 2), "1.5 GiB");
        assert_eq!(format_cpus(500), "0.5");
        assert_eq!(cpus_phrase(1000), "1 CPU");
        assert_eq!(
            Resources::new(8.0, 32 * GIB, 1).describe(),
            "8 CPUs, 32 GiB and 1 GPU"
        );
        assert_eq!(
            Resources::new(2.0, 4 * GIB, 0).describe(),
            "2 CPUs and 4 GiB"
        );
    }

    #[test]
    fn sections_override_defaults_key_by_key() {
        let sections = BTreeMap::from([
            (
                "gpu1".to_string(),
                TierSection {
                    cpus: Some(Cpus(4.0)),
                    ..TierSection::default()
                },
            ),
            (
                "tiny".to_string(),
                TierSection {
                    memory: Some(Memory(GIB)),
                    ..TierSection::default()
                },
            ),
        ]);
        let tiers = resolve_tiers(sections);
        assert_eq!(tiers["gpu1"], Resources::new(4.0, 32 * GIB, 1));
        assert_eq!(tiers["tiny"], Resources::new(2.0, GIB, 0));
        assert_eq!(tiers["gpu8"].gpus, 8);
    }
}
