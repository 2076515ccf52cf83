//! What the user sees: results as text or JSON, errors with their cause chain and a hint.

use std::error::Error;

use serde_json::json;
use strata_builder::build::Built;
use strata_builder::error::BuildError;
use strata_builder::home::{Home, HomeError};
use strata_builder::publish::Pushed;

/// Exit codes (documented in README.md).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 3;
pub const EXIT_REGISTRY: u8 = 4;
pub const EXIT_STORE: u8 = 5;

/// A failed command: the error, a hint, and the exit code.
pub struct Failure {
    pub error: Box<dyn Error>,
    pub hint: Option<&'static str>,
    pub exit_code: u8,
}

impl Failure {
    pub fn build(error: impl Into<BuildError>) -> Failure {
        let error = error.into();
        let exit_code = match &error {
            BuildError::Spec(_)
            | BuildError::BadOption { .. }
            | BuildError::Base(_)
            | BuildError::Resolve(_)
            | BuildError::Fetch(_)
            | BuildError::PinnedHash { .. }
            | BuildError::Install { .. } => EXIT_BAD_INPUT,
            BuildError::Registry(_) => EXIT_REGISTRY,
            BuildError::Store(_) | BuildError::Index(_) | BuildError::Home(_) => EXIT_STORE,
            _ => EXIT_FAILURE,
        };
        Failure {
            hint: error.hint(),
            error: Box::new(error),
            exit_code,
        }
    }

    pub fn home(error: HomeError) -> Failure {
        Failure {
            error: Box::new(error),
            hint: Some("set STRATA_HOME to a writable directory"),
            exit_code: EXIT_STORE,
        }
    }
}

pub fn print_error(failure: &Failure) {
    eprintln!("error: {}", failure.error);
    let mut source = failure.error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = failure.hint {
        eprintln!("hint: {hint}");
    }
}

pub fn print_build(home: &Home, built: &Built, pushed: Option<&Pushed>, as_json: bool) {
    let local = format!("oci:{}:{}", home.store.root().display(), built.tag);
    let image = pushed.map_or_else(|| local.clone(), |p| p.image.clone());
    if as_json {
        let value = json!({
            "image": image,
            "local": local,
            "digest": built.digest,
            "tag": built.tag,
            "spec_digest": built.spec_digest,
            "lock_digest": built.lock_digest,
            "cache": built.cache,
            "size": built.size,
            "layers": built.layers,
            "bytes_uploaded": pushed.map_or(0, |p| p.bytes_uploaded),
            "pushed": pushed,
        });
        println!("{value}");
        return;
    }
    let reused = built.layers.iter().filter(|l| l.reused).count();
    println!("{image}");
    println!("  digest   {}", built.digest);
    println!("  tag      {}", built.tag);
    println!(
        "  cache    {:?}, {reused}/{} layers reused",
        built.cache,
        built.layers.len()
    );
    if let Some(p) = pushed {
        println!("  pushed   {} bytes uploaded", p.bytes_uploaded);
    }
}
