//! Python packaging: requirement specs and their canonical form, names, wheel file names,
//! targets (Python version and platform), locks, resolution with uv, and the verified wheel
//! cache.

mod credentials;
mod fetch;
mod formats;
mod git;
mod local_wheels;
mod lock;
mod name;
mod resolve;
mod sdist;
mod spec;
mod target;
mod wheel_name;

pub use credentials::{
    redact_userinfo, take_userinfo, CredentialSource, IndexCredential, IndexCredentials, Origin,
    Secret,
};
pub use fetch::{FetchError, WheelCache};
pub use formats::{
    format_of, project_file, pylock_text, read_env, EnvFile, Format, FormatError, PinnedPackage,
    PinnedSet, PinnedWheel, RequiresPython, Selection, WheelLocation, PROJECT_FILES,
};
pub use lock::{Lock, LockDigest, LockError, LockedWheel};
pub use name::PackageName;
pub use resolve::{ResolveError, Resolver};
pub use sdist::{BuildError as SourceBuildError, BuiltFrom, SourcePackage};
pub use spec::{
    evaluate_marker, normalise_find_links, parse_requirements_file, parse_requirements_str,
    parse_requirements_with_vars, DirectUrlError, EnvSpec, HashError, InvalidRequirement,
    LocalPathError, MarkerEnvironment, MarkerError, MarkerToken, OptionError, Requirement,
    RequirementError, RequirementsFile, ShellSplitError, SourceError, Sources, SpecDigest,
    SpecError, SpecifierError, Unsupported, Version, VersionError, SPEC_VERSION,
};
pub use target::{Platform, PythonVersion, Target, TargetError};
