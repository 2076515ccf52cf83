//! Where each wheel entry goes: site-packages for the root and `.data/{purelib,platlib}`,
//! bin for `.data/scripts`, the venv for `.data/data`, the headers dir for `.data/headers`.

use std::io::Read;

use crate::scheme::InstallScheme;
use crate::script::{self, ShebangRewrite, SHEBANG_PEEK};
use crate::wheel::Wheel;
use crate::InstallError;

/// One zip entry to install.
pub struct Planned {
    pub index: usize,
    /// Its name in the wheel, for errors.
    pub entry: String,
    /// Its path in the layer.
    pub dest: String,
    pub executable: bool,
    pub symlink: bool,
    pub rewrite: Option<ShebangRewrite>,
}

/// dist-info files the installer replaces or drops.
const REPLACED: [&str; 4] = ["RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER"];

/// Plans every file entry of the wheel. Entries the installer replaces are skipped, but
/// still returned in `skipped` so their hashes are checked too.
pub fn plan(
    wheel: &mut Wheel,
    scheme: &InstallScheme,
) -> Result<(Vec<Planned>, Vec<usize>), InstallError> {
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for index in 0..wheel.archive.len() {
        let (entry, mode) = {
            let file = wheel
                .archive
                .by_index_raw(index)
                .map_err(|e| wheel.id.corrupt(&format!("#{index}"), e.to_string()))?;
            (file.name().to_string(), file.unix_mode())
        };
        if entry.ends_with('/') {
            continue; // Directories come from the files' parents, as pip does.
        }
        if replaced(wheel, &entry) {
            skipped.push(index);
            continue;
        }
        let symlink = mode.is_some_and(|m| m & 0o170000 == 0o120000);
        let (dest, is_script) = destination(wheel, scheme, &entry)?;
        let executable = is_script || mode.is_some_and(|m| m & 0o111 != 0);
        let rewrite = if is_script && !symlink {
            script_rewrite(wheel, scheme, index, &entry)?
        } else {
            None
        };
        planned.push(Planned {
            index,
            entry,
            dest,
            executable,
            symlink,
            rewrite,
        });
    }
    Ok((planned, skipped))
}

fn replaced(wheel: &Wheel, entry: &str) -> bool {
    entry
        .strip_prefix(&wheel.dist_info)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|file| REPLACED.contains(&file))
}

/// The layer path of an entry and whether it is a script.
fn destination(
    wheel: &Wheel,
    scheme: &InstallScheme,
    entry: &str,
) -> Result<(String, bool), InstallError> {
    let top = entry.split('/').next().unwrap_or_default();
    if top != wheel.data_dir {
        if top.ends_with(".data") && entry.contains('/') {
            return Err(wheel.id.invalid(format!(
                "entry {entry:?} is in {top}, expected the data directory {}",
                wheel.data_dir
            )));
        }
        return Ok((format!("{}/{entry}", scheme.site_packages()), false));
    }
    let rest = entry[top.len()..].trim_start_matches('/');
    let (category, path) = rest.split_once('/').unwrap_or((rest, ""));
    let unknown = || InstallError::UnknownDataCategory {
        wheel: wheel.id.0.clone(),
        entry: entry.to_string(),
        category: category.to_string(),
    };
    if path.is_empty() {
        return Err(unknown());
    }
    let dest = match category {
        "purelib" | "platlib" => format!("{}/{path}", scheme.site_packages()),
        "scripts" => return Ok((format!("{}/{path}", scheme.scripts()), true)),
        "data" => format!("{}/{path}", scheme.data()),
        "headers" => format!("{}/{path}", scheme.headers(&wheel.name)),
        _ => return Err(unknown()),
    };
    Ok((dest, false))
}

fn script_rewrite(
    wheel: &mut Wheel,
    scheme: &InstallScheme,
    index: usize,
    entry: &str,
) -> Result<Option<ShebangRewrite>, InstallError> {
    let mut head = Vec::with_capacity(SHEBANG_PEEK);
    let size = {
        let mut file = wheel
            .archive
            .by_index(index)
            .map_err(|e| wheel.id.corrupt(entry, e.to_string()))?;
        let size = file.size();
        file.by_ref()
            .take(SHEBANG_PEEK as u64)
            .read_to_end(&mut head)
            .map_err(|e| wheel.id.entry_error(entry, e))?;
        size
    };
    script::shebang_rewrite(&head, size, &scheme.interpreter())
        .map_err(|r| wheel.id.corrupt(entry, r))
}

/// Checks a symlink target stays inside the venv. The target must be relative and in normal
/// form (`../../a/b`: leading `..` only, no `.` or empty parts): then every `..` walks up a
/// real directory of this layer, whatever other links the target passes through.
pub fn symlink_target_safe(dest: &str, target: &str, root: &str) -> Result<(), &'static str> {
    if target.is_empty() || target.starts_with('/') || target.contains(['\\', '\0']) {
        return Err("symlink target is empty, absolute or has a backslash");
    }
    let components: Vec<&str> = target.split('/').collect();
    let ups = components.iter().take_while(|c| **c == "..").count();
    let normal = components[ups..]
        .iter()
        .all(|c| !matches!(*c, "" | "." | ".."));
    if !normal {
        return Err("symlink target is not in normal form (`..` only at the start)");
    }
    // Depth of the link's directory below the venv root.
    let parent_depth = dest.split('/').count() - 1;
    let root_depth = root.split('/').count();
    if ups > parent_depth.saturating_sub(root_depth) {
        return Err("symlink target escapes the virtual environment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_must_stay_in_the_venv() {
        let link = "opt/venv/lib/python3.11/site-packages/pkg/link";
        let ok = |t| symlink_target_safe(link, t, "opt/venv");
        assert!(ok("other.py").is_ok());
        assert!(ok("../../../../bin/python").is_ok());
        assert!(ok("../../../../../etc").is_err());
        assert!(ok("../../../../../../../../etc").is_err());
        assert!(ok("/etc/passwd").is_err());
        assert!(ok("a/../../../../../..").is_err());
        assert!(ok("./x").is_err());
    }
}
