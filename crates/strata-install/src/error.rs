//! Errors of wheel installation. Every variant names the wheel file and, where there is one,
//! the entry inside it.

use std::io;

use crate::layer::LayerError;
use crate::record::RecordError;
use crate::script::EntryPointError;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Boxed: rare, and every `Result` of an install carries this enum.
    #[error("could not compile the modules of wheel {wheel}: {source}")]
    Bytecode {
        wheel: String,
        #[source]
        source: Box<crate::bytecode::BytecodeError>,
    },
    #[error("cannot read wheel {wheel}")]
    Read {
        wheel: String,
        #[source]
        source: io::Error,
    },
    #[error("wheel {wheel} is not a valid zip archive")]
    Zip {
        wheel: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("invalid wheel file name {wheel:?}: {reason}")]
    FileName { wheel: String, reason: String },
    #[error("wheel {wheel}: {reason}")]
    Invalid { wheel: String, reason: String },
    #[error("wheel {wheel}: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        wheel: String,
        entry: String,
        reason: &'static str,
    },
    #[error("wheel {wheel}: entry {entry:?} appears more than once")]
    DuplicateEntry { wheel: String, entry: String },
    #[error("wheel {wheel}: entry {entry:?} is in an unknown .data category {category:?}")]
    UnknownDataCategory {
        wheel: String,
        entry: String,
        category: String,
    },
    #[error("wheel {wheel} is corrupt: entry {entry:?}: {reason}")]
    Corrupt {
        wheel: String,
        entry: String,
        reason: String,
    },
    /// A row of the wheel's RECORD (`file` names it) that could not be understood.
    #[error("wheel {wheel}: {file} line {line}: {source}")]
    Record {
        wheel: String,
        file: String,
        line: usize,
        #[source]
        source: RecordError,
    },
    /// A script line of the wheel's `entry_points.txt` (`file`) that could not be understood.
    #[error("wheel {wheel}: {file} line {line}: {source}")]
    EntryPoints {
        wheel: String,
        file: String,
        line: usize,
        #[source]
        source: EntryPointError,
    },
    #[error("wheel {wheel} is refused: it holds more than {limit} {what} (a zip bomb?)")]
    Limit {
        wheel: String,
        limit: u64,
        what: &'static str,
    },
    #[error("wheel {wheel}: cannot read entry {entry:?}")]
    Entry {
        wheel: String,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("wheel {wheel}: installing entry {entry:?}")]
    Layer {
        wheel: String,
        entry: String,
        #[source]
        source: LayerError,
    },
    #[error("wheels {first} and {second} both install {path:?}")]
    Conflict {
        path: String,
        first: String,
        second: String,
    },
    #[error("wheels {first} and {second} are both project {name}: one layer holds one version")]
    SameProject {
        name: String,
        first: String,
        second: String,
    },
    #[error("no wheels to install into a merged layer")]
    NoWheels,
    #[error("invalid install scheme: {0}")]
    Scheme(String),
    #[error("writing the layer of {what}")]
    Write {
        what: String,
        #[source]
        source: LayerError,
    },
}
