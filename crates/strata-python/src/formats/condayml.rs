//! conda's `environment.yml`.

use std::path::Path;

use super::error::FormatError;
use super::EnvFile;

pub(super) fn read(file: &Path, _text: &str) -> Result<EnvFile, FormatError> {
    Err(FormatError::Invalid {
        file: file.to_path_buf(),
        key: "environment.yml".into(),
        message: "not read yet".into(),
    })
}
