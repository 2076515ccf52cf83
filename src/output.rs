//! What the user sees: results as text or JSON, errors with their cause chain and a hint.

use std::error::Error;

use serde::Serialize;
use serde_json::json;
use strata_agent::{JobMetrics, JobStatus, Submitted};
use strata_build::BuildError;
use strata_build::Built;
use strata_build::Explanation;
use strata_build::Pushed;
use strata_build::{Home, HomeError};
use strata_build::{LayerCheck, LayerKind, ServedBytes, Verification, VerifyError};
use strata_detect::{DetectError, Detection, Source};
use strata_gc::run::RunError;
use strata_index::{Catalog, CatalogImage};
use strata_queue::JobView;

/// Exit codes (documented in README.md).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 3;
pub const EXIT_REGISTRY: u8 = 4;
pub const EXIT_STORE: u8 = 5;
/// `strata verify`: the rebuilt image differs from the registry's, or a blob is damaged.
pub const EXIT_NOT_VERIFIED: u8 = 6;

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
            | BuildError::Format(_)
            | BuildError::BadOption { .. }
            | BuildError::Base(_)
            | BuildError::Resolve(_)
            | BuildError::Fetch(_)
            | BuildError::PinnedHash { .. }
            | BuildError::UnpinnedDependency { .. }
            | BuildError::Install { .. }
            | BuildError::Overlap { .. }
            | BuildError::Config(_)
            | BuildError::NotAnImage { .. } => EXIT_BAD_INPUT,
            BuildError::Registry(_)
            | BuildError::DamagedRegistryBlob { .. }
            | BuildError::ImplausibleLayerSize { .. } => EXIT_REGISTRY,
            BuildError::Store(_)
            | BuildError::Index(_)
            | BuildError::Home(_)
            | BuildError::Verify(_)
            | BuildError::Gc(_)
            | BuildError::DamagedImage { .. } => EXIT_STORE,
            // A new variant must be placed here on purpose: no catch-all.
            BuildError::EnvLayer { .. } | BuildError::Io { .. } | BuildError::Internal(_) => {
                EXIT_FAILURE
            }
        };
        Failure {
            hint: error.hint(),
            error: Box::new(error),
            exit_code,
        }
    }

    pub fn verify(error: VerifyError) -> Failure {
        let error = match error {
            VerifyError::Build(e) => return Failure::build(e),
            other => other,
        };
        let exit_code = match &error {
            VerifyError::Build(_) => EXIT_FAILURE,
            VerifyError::NotStrata { .. }
            | VerifyError::LayerFormat { .. }
            | VerifyError::LockMismatch { .. }
            | VerifyError::BadLock { .. }
            | VerifyError::NotCanonical { .. }
            | VerifyError::BadWheelName { .. }
            | VerifyError::NoBase { .. }
            | VerifyError::BaseMismatch { .. }
            | VerifyError::TooFewLayers { .. }
            | VerifyError::MissingWheels { .. } => EXIT_BAD_INPUT,
            VerifyError::Io { .. } => EXIT_FAILURE,
        };
        Failure {
            hint: error.hint(),
            error: Box::new(error),
            exit_code,
        }
    }

    /// A verify that ran and found differences (printed before).
    pub fn not_verified(verification: &Verification) -> Failure {
        let total = verification.layers.len();
        let reference = &verification.reference;
        // Nothing rebuilt, nothing compared: only the damaged layers are known to be wrong.
        let message = match verification.not_rebuilt {
            Some(_) => format!(
                "{reference} does not verify: {} of {total} layers are damaged, the env layer \
                 among them, so nothing was rebuilt to compare the others",
                verification.damaged_layers().count(),
            ),
            None => format!(
                "{reference} does not verify: {} of {total} layers differ or are damaged",
                verification.failed_layers().count(),
            ),
        };
        Failure {
            error: message.into(),
            hint: Some("a layer that differs is not what the image's lock builds on this machine; bytes that do not hash to their digest were changed where the registry keeps them"),
            exit_code: EXIT_NOT_VERIFIED,
        }
    }

    pub fn gc(error: RunError) -> Failure {
        let (exit_code, hint) = match &error {
            RunError::Config(_) | RunError::Policy(_) => (
                EXIT_BAD_INPUT,
                Some("fix the configuration key shown (strata.toml or $STRATA_HOME/config.toml)"),
            ),
            RunError::Registry(e) => (EXIT_REGISTRY, Some(e.hint())),
            RunError::RegistryGc(_) => (EXIT_REGISTRY, None),
            RunError::Index(_) | RunError::Local(_) => (EXIT_STORE, None),
            RunError::Runtime(_) => (EXIT_FAILURE, None),
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code,
        }
    }

    pub fn store(error: impl Error + 'static) -> Failure {
        Failure {
            error: Box::new(error),
            hint: Some("the local store or its database could not be read"),
            exit_code: EXIT_STORE,
        }
    }

    pub fn deploy(error: strata_deploy::DeployError) -> Failure {
        Failure {
            error: Box::new(error),
            hint: Some("`strata deploy --help` lists the options"),
            exit_code: EXIT_BAD_INPUT,
        }
    }

    pub fn not_found(message: String) -> Failure {
        Failure {
            error: message.into(),
            hint: Some("`strata images` lists the local images"),
            exit_code: EXIT_BAD_INPUT,
        }
    }

    pub fn detect(error: DetectError) -> Failure {
        let (exit_code, hint) = match &error {
            DetectError::Syntax { .. } => (
                EXIT_BAD_INPUT,
                Some("fix the file, or exclude it with .gitignore"),
            ),
            DetectError::Env(_) => (
                EXIT_BAD_INPUT,
                Some("activate the project's environment (VIRTUAL_ENV or CONDA_PREFIX), or put its python first on PATH"),
            ),
            DetectError::NoSuchPath { .. }
            | DetectError::Requirements(_)
            | DetectError::Format(_)
            | DetectError::Pyproject { .. }
            | DetectError::UnsupportedPython { .. } => (EXIT_BAD_INPUT, None),
            DetectError::Io { .. } | DetectError::Walk { .. } => (EXIT_FAILURE, None),
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code,
        }
    }

    /// A file the command writes (not the store) could not be written.
    pub fn io(path: &std::path::Path, error: std::io::Error) -> Failure {
        Failure {
            error: format!("cannot write {}: {error}", path.display()).into(),
            hint: None,
            exit_code: EXIT_FAILURE,
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

/// Whether stderr gets colour: only a terminal does, and not when `NO_COLOR` is set
/// (https://no-color.org). The log writer would otherwise colour a file or a pipe too.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub fn print_error(failure: &Failure) {
    let causes = strata_errors::causes(failure.error.as_ref());
    let mut lines = causes.iter();
    if let Some(first) = lines.next() {
        eprintln!("error: {first}");
    }
    for cause in lines {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = failure.hint {
        eprintln!("hint: {hint}");
    }
}

/// `warning: ...` on stderr, one per line.
pub fn print_warnings<'a>(warnings: impl IntoIterator<Item = &'a String>) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

/// What the store repaired while opening, then `warnings`: on stderr, before a build's result
/// or its push's error.
pub fn print_build_warnings<'a>(home: &Home, warnings: impl IntoIterator<Item = &'a String>) {
    for repair in home.repairs() {
        eprintln!("warning: {repair}");
    }
    print_warnings(warnings);
}

pub fn print_build(
    home: &Home,
    built: &Built,
    pushed: Option<&Pushed>,
    explanation: Option<&Explanation>,
    as_json: bool,
) {
    let warnings: Vec<&String> = built
        .warnings
        .iter()
        .chain(pushed.iter().flat_map(|p| &p.warnings))
        .collect();
    print_build_warnings(home, warnings.iter().copied());
    // A registry's answer is in the store only when pulled.
    let in_store = built.registry.as_ref().is_none_or(|r| r.pulled);
    let local = format!("oci:{}:{}", home.store.root().display(), built.tag);
    let image = match (pushed, &built.registry) {
        (Some(p), _) => p.image.clone(),
        (None, Some(r)) => r.image.clone(),
        (None, None) => local.clone(),
    };
    let local = in_store.then_some(local);
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
            "explain": explanation,
            "repairs": home.repairs(),
            "registry": built.registry,
            "warnings": warnings,
        });
        println!("{value}");
        return;
    }
    if let Some(explanation) = explanation {
        print_explanation(explanation, false);
    }
    let reused = built.layers.iter().filter(|l| l.reused).count();
    let downloaded = built.layers.iter().filter(|l| l.registry.is_some()).count();
    let from_registry = match downloaded {
        0 => String::new(),
        n => format!(" ({n} from the registry's layer index)"),
    };
    println!("{image}");
    println!("  digest   {}", built.digest);
    println!("  tag      {}", built.tag);
    println!(
        "  cache    {}, {reused}/{} layers reused{from_registry}",
        built.cache,
        built.layers.len()
    );
    if let Some(p) = pushed {
        println!("  pushed   {}", uploaded_text(p));
    }
}

/// `N bytes uploaded`, and the layer index's own bytes when there were any.
pub fn uploaded_text(pushed: &Pushed) -> String {
    match pushed.layer_entry_bytes_uploaded {
        0 => format!("{} bytes uploaded", pushed.bytes_uploaded),
        index => format!(
            "{} bytes uploaded (and {index} of layer index entries)",
            pushed.bytes_uploaded
        ),
    }
}

/// JSON when asked for, else the text `text` makes.
pub fn print_json_or<T: Serialize>(value: &T, as_json: bool, text: impl FnOnce() -> String) {
    if as_json {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

pub fn print_verification(verification: &Verification, as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string(verification).unwrap_or_default()
        );
        return;
    }
    if verification.verified {
        println!(
            "verified {}: {} layers match\n  image {}",
            verification.reference,
            verification.layers.len(),
            verification.image
        );
        return;
    }
    println!(
        "{} does not verify ({})",
        verification.reference, verification.image
    );
    if let Some(why) = &verification.not_rebuilt {
        println!("  not rebuilt: {why}");
    }
    for layer in verification.failed_layers() {
        for line in layer_failures(layer) {
            println!("  {line}");
        }
    }
    if !verification.config_bytes.is_ok() {
        println!(
            "  config: {}",
            served_text(&verification.config_bytes, &verification.config.registry)
        );
    }
    for (what, compared) in [
        ("config", &verification.config),
        ("manifest", &verification.manifest),
    ] {
        if let (false, Some(rebuilt)) = (compared.matches(), &compared.rebuilt) {
            println!(
                "  {what}: registry {}, rebuilt {rebuilt}",
                compared.registry
            );
        }
    }
}

/// What is wrong with one layer, one line each.
fn layer_failures(layer: &LayerCheck) -> Vec<String> {
    let what = match (layer.kind, layer.packages.is_empty()) {
        (LayerKind::Env, _) => "env layer".to_string(),
        (LayerKind::Base, true) => "base layer".to_string(),
        (_, _) => layer.packages.join(", "),
    };
    let name = format!("layer {} ({what})", layer.index);
    let show = |d: &Option<strata_oci::Digest>| {
        d.as_ref()
            .map_or_else(|| "none".to_string(), ToString::to_string)
    };
    let mut lines = Vec::new();
    if let (Some(bytes), Some(digest)) = (&layer.bytes, &layer.registry) {
        if !bytes.is_ok() {
            lines.push(format!("{name}: {}", served_text(bytes, digest)));
        }
    }
    if layer.registry != layer.rebuilt && layer.rebuilt.is_some() || layer.registry.is_none() {
        lines.push(format!(
            "{name}: registry {}, rebuilt {}",
            show(&layer.registry),
            show(&layer.rebuilt)
        ));
    } else if layer.registry_diff_id != layer.rebuilt_diff_id && layer.rebuilt_diff_id.is_some() {
        lines.push(format!(
            "{name}: diff_id in the registry's config {}, rebuilt {}",
            show(&layer.registry_diff_id),
            show(&layer.rebuilt_diff_id)
        ));
    }
    lines
}

fn served_text(bytes: &ServedBytes, digest: &strata_oci::Digest) -> String {
    match bytes {
        ServedBytes::Ok => format!("the registry's bytes are {digest}"),
        ServedBytes::HashMismatch { actual } => format!(
            "the registry's bytes hash to {actual}, not to its digest {digest} (changed in the registry's storage)"
        ),
        ServedBytes::SizeMismatch { expected, actual } => format!(
            "the registry sent {actual} bytes for {digest}, whose descriptor says {expected}"
        ),
    }
}

pub fn print_explanation(explanation: &Explanation, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(explanation).unwrap_or_default());
        return;
    }
    if let Some(hit) = &explanation.hit {
        println!(
            "cache hit: {} ({}), resolved {}; `strata build --refresh` resolves again",
            hit.tag,
            hit.manifest,
            utc(hit.resolved_at)
        );
        for pin in &hit.git {
            println!("  {} built from git commit {}", pin.name, pin.commit);
        }
        return;
    }
    let Some(nearest) = &explanation.nearest else {
        println!("cache miss: nothing is cached yet");
        return;
    };
    println!(
        "cache miss: nearest cached environment is {} ({}), which differs in:",
        nearest.tag,
        if nearest.name.is_empty() {
            "unnamed"
        } else {
            &nearest.name
        }
    );
    for difference in &explanation.differences {
        println!("  - {difference}");
    }
    for pin in &nearest.git {
        println!(
            "  (its {} was built from git commit {})",
            pin.name, pin.commit
        );
    }
}

pub fn print_images(catalog: &Catalog, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(catalog).unwrap_or_default());
        return;
    }
    println!(
        "{:<24} {:<16} {:>10} {:>10}  {:<20}  DIGEST",
        "TAG", "NAME", "SIZE", "FREES", "RESOLVED"
    );
    for image in &catalog.images {
        println!(
            "{:<24} {:<16} {:>10} {:>10}  {:<20}  {}",
            image.tag,
            image.name.as_deref().unwrap_or("-"),
            human(image.size),
            human(image.exclusive_size),
            image.resolved_at.map_or_else(|| "-".to_string(), utc),
            image.digest.short(12)
        );
    }
    println!(
        "{} images, {} stored ({} if nothing were shared)",
        catalog.images.len(),
        human(catalog.unique_bytes),
        human(catalog.naive_bytes)
    );
}

/// Unix seconds as an RFC 3339 UTC time (`2026-12-06T21:30:00Z`).
fn utc(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

pub fn print_inspect(image: &CatalogImage, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(image).unwrap_or_default());
        return;
    }
    println!("{} {}", image.tag, image.digest);
    if let Some(spec) = &image.spec_digest {
        println!("  spec     {spec}");
    }
    if let Some(lock) = &image.lock_digest {
        println!("  lock     {lock}");
    }
    if let Some(resolved) = image.resolved_at {
        println!("  resolved {}", utc(resolved));
    }
    println!(
        "  size     {} ({} only in this image)",
        human(image.size),
        human(image.exclusive_size)
    );
    println!("  layers");
    for layer in &image.layers {
        let packages = if layer.packages.is_empty() {
            "-".to_string()
        } else {
            layer.packages.join(", ")
        };
        let shared = if layer.shared_with.is_empty() {
            String::new()
        } else {
            format!("  shared with {}", layer.shared_with.join(", "))
        };
        println!(
            "    {} {:>10}  {packages}{shared}",
            layer.digest.short(12),
            human(layer.size)
        );
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_job_views(views: &[JobView], as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(views).unwrap_or_default());
        return;
    }
    println!(
        "{:<14} {:<10} {:<6} {:<8} {:<10} {:>4}  WHY",
        "JOB", "QUEUE", "TIER", "USER", "STATE", "POS"
    );
    for v in views {
        println!(
            "{:<14} {:<10} {:<6} {:<8} {:<10} {:>4}  {}",
            v.id.as_str(),
            v.queue,
            v.tier,
            v.user,
            v.state.as_str(),
            v.position.map(|p| p.to_string()).unwrap_or_default(),
            v.reason.as_deref().unwrap_or("")
        );
    }
}

/// `strata submit`: the job id (and, to stderr, what code was shipped).
pub fn print_submitted(submitted: &Submitted, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(submitted).unwrap_or_default());
        return;
    }
    if let Some(code) = &submitted.code {
        let git = match &code.git {
            Some(g) => format!(
                ", commit {}{}",
                g.commit
                    .as_deref()
                    .map_or("(none)", |c| &c[..c.len().min(12)]),
                if g.dirty { " (dirty)" } else { "" }
            ),
            None => String::new(),
        };
        eprintln!(
            "code: {} files, {} at {} (layer {}{}){git}",
            code.files,
            strata_code::human_bytes(code.bytes),
            code.dest,
            code.layer.digest.short(12),
            if code.reused { ", unchanged" } else { "" },
        );
        if !code.included.is_empty() {
            eprintln!(
                "code: shipped on purpose (--include): {}",
                code.included.join(", ")
            );
        }
    }
    println!("{}", submitted.id);
}

pub fn print_job_status(status: &JobStatus, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(status).unwrap_or_default());
        return;
    }
    let v = &status.view;
    println!(
        "{} {} ({} / {}, user {})",
        v.id.as_str(),
        v.state.as_str(),
        v.queue,
        v.tier,
        v.user
    );
    if let Some(position) = v.position {
        println!("  position  {position}");
    }
    if let Some(reason) = &v.reason {
        println!("  why       {reason}");
    }
    if let Some(start) = v.estimated_start {
        println!("  estimated start  {start} (unix time)");
    }
    if let Some(code) = v.exit_code {
        println!("  exit code {code}");
    }
    if v.oom_killed {
        println!("  killed: out of memory");
    }
    println!("  command   {}", status.command.join(" "));
    if let Some(code) = &status.code {
        println!(
            "  code      {} at {} ({} files, {})",
            code.layer.digest,
            code.dest,
            code.files,
            strata_code::human_bytes(code.bytes)
        );
        match (&code.git_commit, code.git_dirty) {
            (Some(commit), dirty) => println!(
                "  git       {commit}{}",
                if dirty == Some(true) { " (dirty)" } else { "" }
            ),
            (None, Some(_)) => println!("  git       no commit yet"),
            (None, None) => {}
        }
    }
    println!("  log       {}", status.log.display());
    for event in &status.history {
        println!(
            "  {:>12}  {}  {}",
            event.at,
            event.state,
            event.detail.as_deref().unwrap_or("")
        );
    }
}

pub fn print_metrics(metrics: &[JobMetrics], as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(metrics).unwrap_or_default());
        return;
    }
    println!(
        "{:<14} {:<16} {:>12} {:>6}  TREND",
        "JOB", "METRIC", "LAST", "N"
    );
    for job in metrics {
        for s in &job.series {
            println!(
                "{:<14} {:<16} {:>12} {:>6}  {}",
                job.job,
                s.name,
                s.last.map(|v| format!("{v:.4}")).unwrap_or_default(),
                s.count,
                s.sparkline
            );
        }
    }
}

/// `strata token list`: id, user, team, admin, created and revoked times.
pub fn print_tokens(tokens: &[strata_db::tokens::TokenInfo], as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(tokens).unwrap_or_default());
        return;
    }
    println!(
        "{:<16} {:<12} {:<12} {:<5} {:<20} REVOKED",
        "ID", "USER", "TEAM", "ADMIN", "CREATED"
    );
    for t in tokens {
        println!(
            "{:<16} {:<12} {:<12} {:<5} {:<20} {}",
            t.id,
            t.user,
            t.team,
            if t.admin { "yes" } else { "" },
            utc(t.created_at),
            t.revoked_at.map(utc).unwrap_or_default()
        );
    }
}

/// `strata outputs JOB`: the collected files with their sizes, and what was left out.
pub fn print_outputs(outputs: &strata_agent::JobOutputs, as_json: bool) {
    use strata_agent::OutputsState;
    if as_json {
        println!("{}", serde_json::to_string(outputs).unwrap_or_default());
        return;
    }
    match outputs.state {
        OutputsState::Collected => {}
        _ => {
            println!("{}", outputs.unavailable());
            return;
        }
    }
    if outputs.files.is_empty() {
        println!(
            "no files collected (the job wrote none under {})",
            outputs.asked.join(", ")
        );
    }
    for file in &outputs.files {
        println!("{:>10}  {}", human(file.size), file.path);
    }
    if let Some(c) = &outputs.collected {
        for missing in &c.missing {
            println!("not written by the job: {missing}");
        }
        for note in &c.notes {
            println!("note: {note}");
        }
        if c.truncated {
            println!("PARTIAL: a limit ([outputs] max_size / max_files) cut the copy short");
        }
    }
    // Through a server the files are not on this machine.
    if outputs.dir.as_os_str().is_empty() {
        println!(
            "on the server: `strata outputs {} --to DIR` copies them",
            outputs.job
        );
    } else {
        println!("in {}", outputs.dir.display());
    }
}

/// What `strata submit` detected, on stderr (stdout is the job id).
pub fn print_detected(detected: &strata_agent::DetectedEnvironment) {
    let detection = &detected.detection;
    let from = match &detection.from {
        strata_detect::Origin::File { file } => file.display().to_string(),
        strata_detect::Origin::Imports => format!(
            "imports ({} requirements, pinned to the active environment)",
            detection.requirements.len()
        ),
    };
    eprintln!(
        "environment: from {from}; requirements in {}",
        detected.requirements.display()
    );
    for package in &detection.local_packages {
        eprintln!("local package {} shipped as code", package.name);
    }
    for warning in &detection.warnings {
        eprintln!("warning: {warning}");
    }
    for note in &detection.notes {
        eprintln!("note: {note}");
    }
}

/// Sources shown per requirement in text output; JSON has them all.
const SHOWN_SOURCES: usize = 3;

pub fn print_detection(detection: &Detection, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(detection).unwrap_or_default());
        return;
    }
    let from = match &detection.from {
        strata_detect::Origin::File { file } => file.display().to_string(),
        strata_detect::Origin::Imports => "imports".to_string(),
    };
    let mut context = Vec::new();
    if let Some(env) = &detection.environment {
        context.push(format!("environment {}", env.display()));
    }
    if let Some(python) = detection.python {
        context.push(format!("Python {python}"));
    }
    let context = if context.is_empty() {
        String::new()
    } else {
        format!(" ({})", context.join(", "))
    };
    println!("{}: from {from}{context}", detection.root.display());
    let width = detection
        .requirements
        .iter()
        .map(|r| r.requirement.len())
        .max()
        .unwrap_or(0);
    for requirement in &detection.requirements {
        println!(
            "  {:width$}  {}",
            requirement.requirement,
            sources_text(&requirement.sources)
        );
    }
    if !detection.local_packages.is_empty() {
        println!("local packages (shipped as code, not looked up on an index):");
        for package in &detection.local_packages {
            let editable = if package.editable { ", editable" } else { "" };
            println!(
                "  {} {} ({}{editable})  {}",
                package.name,
                package.version,
                package.path.display(),
                sources_text(&package.sources)
            );
        }
    }
    for warning in &detection.warnings {
        eprintln!("warning: {warning}");
    }
    for note in &detection.notes {
        eprintln!("note: {note}");
    }
}

fn sources_text(sources: &[Source]) -> String {
    let mut text: Vec<String> = sources
        .iter()
        .take(SHOWN_SOURCES)
        .map(Source::to_string)
        .collect();
    if sources.len() > SHOWN_SOURCES {
        text.push(format!("and {} more", sources.len() - SHOWN_SOURCES));
    }
    text.join("; ")
}
