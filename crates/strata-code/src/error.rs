use std::path::PathBuf;

use strata_oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("{root} is not a directory: code is shipped from a directory")]
    NotADirectory {
        root: PathBuf,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("walking {root}")]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the name (or a symlink's target) is not UTF-8, which a layer cannot carry")]
    NotUtf8 { path: PathBuf },
    #[error("invalid pattern {pattern:?}")]
    BadPattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("invalid code destination {dest:?}: an absolute path other than / without '.' or '..' components")]
    BadDest { dest: String },
    #[error("refusing to ship {} that look{} like secrets: {}; leave {} out with .strataignore (or .gitignore), or ship {} on purpose with --include PATTERN",
        plural(files.len(), "file"), if files.len() == 1 { "s" } else { "" }, files.join(", "),
        if files.len() == 1 { "it" } else { "them" }, if files.len() == 1 { "it" } else { "them" })]
    Secrets { files: Vec<String> },
    #[error("the code under {root} is {} in {}, over the limit of {} (--max-code-size); the largest: {}; leave data out with .strataignore (or .gitignore)",
        human_bytes(*total), plural(*files, "file"), human_bytes(*max),
        largest.iter().map(|(p, s)| format!("{p} ({})", human_bytes(*s))).collect::<Vec<_>>().join(", "))]
    TooLarge {
        root: PathBuf,
        total: u64,
        files: usize,
        max: u64,
        largest: Vec<(String, u64)>,
    },
    #[error("writing the code layer of {root}")]
    Layer {
        root: PathBuf,
        #[source]
        source: strata_install::LayerError,
    },
    #[error(transparent)]
    Store(#[from] strata_oci::StoreError),
    #[error(transparent)]
    Index(#[from] strata_index::IndexError),
    #[error("image {digest} is not an image manifest (an index or unreadable): {detail}")]
    NotAnImage { digest: Digest, detail: String },
    #[error("the config of image {digest} is not a JSON object")]
    BadConfig { digest: Digest },
    #[error("the code layer {digest} is not in the store (collected since the job was submitted?): submit again")]
    CodeLayerGone { digest: Digest },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// "512 B", "1.5 kB", "20.0 MB" (powers of 1000, as `--max-code-size 100MB` reads).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
