//! `strata build`.

use std::path::PathBuf;

use clap::Args;
use strata_build::BaseRef;
use strata_build::BuildDefaults;
use strata_build::PushTarget;
use strata_build::{build_checked, explain, BuildOptions};
use strata_build::{CacheDefaults, CacheSource, RegistryCache};
use strata_install::LayerCompression;
use strata_python::{Platform, PythonVersion};

use crate::output::{self, Failure};
use crate::progress::TerminalProgress;

/// What names an environment: the same flags for `build` and `explain`.
#[derive(Args)]
pub struct EnvArgs {
    /// The environment file: requirements*.txt, pyproject.toml, pylock.toml, uv.lock,
    /// poetry.lock (with its pyproject.toml), Pipfile.lock or environment.yml (by name, else by
    /// content), or a project directory (its first of pylock.toml, uv.lock, poetry.lock,
    /// Pipfile.lock, pyproject.toml, requirements.txt, environment.yml).
    #[arg(short = 'r', long = "requirements", value_name = "FILE|DIR")]
    pub requirements: PathBuf,
    /// An extra to install (repeatable): of pyproject.toml's [project.optional-dependencies],
    /// uv.lock, or poetry.lock's [tool.poetry.extras].
    #[arg(long = "extra", value_name = "NAME")]
    pub extras: Vec<String>,
    /// A dependency group to install (repeatable): of pyproject.toml's [dependency-groups],
    /// uv.lock, poetry.lock's [tool.poetry.group.NAME], or Pipfile.lock's develop (`dev`).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Install the project itself too (a pyproject.toml's or uv.lock's project that is a
    /// package: built from its directory), not only its dependencies.
    #[arg(long)]
    pub install_project: bool,
    /// Base image: oci:PATH[:TAG|@DIGEST] or REGISTRY/REPO[:TAG|@DIGEST]; default: `base`
    /// under `[build]` in strata.toml.
    #[arg(long, env = "STRATA_BASE", value_name = "REF")]
    pub base: Option<String>,
    /// Target Python version (X.Y); default: the base image's.
    #[arg(long, value_name = "X.Y")]
    pub python: Option<PythonVersion>,
    /// Target platform.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: Platform,
    /// Extra directory or URL of wheels (repeatable); default: `[build] find_links`.
    #[arg(long = "find-links", short = 'f', value_name = "DIR")]
    pub find_links: Vec<String>,
    /// Do not use any package index (only --find-links).
    #[arg(long)]
    pub no_index: bool,
    /// The environment's name (retention keeps the newest per name); default: the file stem, or the project directory's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Most layers in the image, base included; past it the least shared wheels share a layer.
    #[arg(long, default_value_t = strata_build::DEFAULT_LAYER_LIMIT)]
    pub max_layers: usize,
    /// Layer compression, gzip or zstd (zstd is another image; umoci 0.4.7 cannot unpack
    /// it); default: `compression` under [build] in strata.toml, else gzip.
    #[arg(long, value_name = "gzip|zstd")]
    pub compression: Option<LayerCompression>,
    /// Write .pyc files (PEP 552 unchecked-hash, deterministic) into each package's layer,
    /// compiled by this machine's CPython of the target's version; another image than without.
    #[arg(long)]
    pub compile: bool,
}

impl EnvArgs {
    pub fn options(&self, jobs: Option<usize>) -> Result<BuildOptions, Failure> {
        let defaults = build_defaults()?;
        let Some(base) = defaults.base_or(self.base.as_deref()) else {
            return Err(Failure::usage(NO_BASE));
        };
        let base: BaseRef = base.parse().map_err(Failure::build)?;
        let python = match (self.python, &defaults.python) {
            (Some(python), _) => Some(python),
            (None, Some(text)) => Some(text.parse().map_err(|e: strata_python::TargetError| {
                Failure::usage(&format!("[build] python in strata.toml: {e}"))
            })?),
            (None, None) => None,
        };
        let compression = match (self.compression, &defaults.compression) {
            (Some(flag), _) => flag,
            (None, Some(text)) => {
                text.parse()
                    .map_err(|e: strata_install::UnknownCompression| {
                        Failure::usage(&format!("[build] compression in strata.toml: {e}"))
                    })?
            }
            (None, None) => LayerCompression::Gzip,
        };
        let jobs =
            jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(BuildOptions {
            requirements: self.requirements.clone(),
            selection: strata_python::Selection {
                extras: self.extras.clone(),
                groups: self.groups.clone(),
                project: self.install_project,
            },
            base,
            python,
            platform: self.platform,
            find_links: defaults.find_links_or(&self.find_links),
            no_index: self.no_index || defaults.no_index,
            jobs,
            name: self.name.clone(),
            layer_limit: self.max_layers,
            compression,
            compile: self.compile,
            registry_cache: Default::default(),
            refresh: false,
        })
    }
}

/// The error when no base image is named anywhere.
pub const NO_BASE: &str =
    "no base image: give --base REF, set STRATA_BASE, or set `base` under [build] in strata.toml";

/// `[build]` of `strata.toml` (the current directory's) and `$STRATA_HOME/config.toml`.
pub fn build_defaults() -> Result<BuildDefaults, Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let project = std::env::current_dir().unwrap_or_default();
    let config = strata_config::Config::load(&project, &root).map_err(Failure::build)?;
    BuildDefaults::from_config(&config).map_err(Failure::build)
}

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub env: EnvArgs,
    /// Push the image to REGISTRY/REPO.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub push: Option<String>,
    /// Take the image from REGISTRY/REPO when it holds this spec's tag, or (after resolution)
    /// an image of the same lock; read only (repeatable; default: `registry` under [cache] in
    /// strata.toml). The --push target is looked up first in any case.
    #[arg(long = "cache-from", value_name = "REGISTRY/REPO")]
    pub cache_from: Vec<String>,
    /// Bring an image a registry answered with into the local store (every blob it lacks), so
    /// that later builds hit locally and jobs can run it; default: the store is left alone.
    #[arg(long)]
    pub pull: bool,
    /// Allow plain HTTP to a non-loopback registry.
    #[arg(long)]
    pub insecure: bool,
    /// Parallel fetches and layer builds (default: number of CPUs).
    #[arg(long, short = 'j', env = "STRATA_JOBS")]
    pub jobs: Option<usize>,
    /// Also say why the build is or is not a cache hit.
    #[arg(long)]
    pub explain: bool,
    /// Resolve again even if this spec was built before: ranges (`numpy>=1.26`) are otherwise
    /// answered by the lock of the first build. A newer lock builds a new image under the
    /// spec's tag; the old image stays in the store, untagged, until `strata gc`.
    #[arg(long)]
    pub refresh: bool,
    /// Print one JSON object with the result.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BuildArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let mut options = args.env.options(args.jobs)?;
    let target = match &args.push {
        Some(target) => Some(PushTarget::new(target, args.insecure).map_err(Failure::build)?),
        None => None,
    };
    options.registry_cache = registry_cache(&args, target.as_ref())?;
    options.refresh = args.refresh;
    let explanation = match args.explain {
        true => Some(explain(&home, &options).map_err(Failure::build)?),
        false => None,
    };
    let progress = TerminalProgress::new(!args.json);
    // On a miss, check the registry before any work: an unreachable one then fails before
    // the store is touched. A hit needs no check (the push itself is one HEAD).
    let check = || target.as_ref().map_or(Ok(()), PushTarget::check);
    let built = build_checked(&home, &options, &progress, check).map_err(Failure::build)?;
    let pushed = match &target {
        Some(target) => match target.push_built(&home, &built, &progress) {
            Ok(pushed) => Some(pushed),
            Err(e) => {
                progress.finish();
                // The build's warnings may say why (a layer the registry served damaged).
                output::print_build_warnings(&home, &built.warnings);
                return Err(Failure::build(e));
            }
        },
        None => None,
    };
    progress.finish();
    output::print_build(
        &home,
        &built,
        pushed.as_ref(),
        explanation.as_ref(),
        args.json,
    );
    Ok(())
}

/// The registries a build looks in, in order: the push target, then `--cache-from` (else
/// `[cache] registry`), each once.
fn registry_cache(args: &BuildArgs, target: Option<&PushTarget>) -> Result<RegistryCache, Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let project = std::env::current_dir().unwrap_or_default();
    let config = strata_config::Config::load(&project, &root).map_err(Failure::build)?;
    let defaults = CacheDefaults::from_config(&config).map_err(Failure::build)?;
    let mut sources: Vec<CacheSource> = target.map(PushTarget::cache_source).into_iter().collect();
    for repo in defaults.registries_or(&args.cache_from) {
        let source = CacheSource::new(&repo, args.insecure).map_err(Failure::build)?;
        if !sources
            .iter()
            .any(|s| s.repository() == source.repository())
        {
            sources.push(source);
        }
    }
    Ok(RegistryCache {
        sources,
        pull: args.pull,
    })
}
