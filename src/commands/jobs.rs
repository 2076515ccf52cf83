//! The job commands: `submit`, `jobs`, `status`, `cancel`, `logs`, `metrics`, `agent`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use strata_agent::{parse_env, Agent, AgentError, AgentOptions, BackendChoice, LauncherSettings};
use strata_agent::{Client, ClientError, DetectedError};
use strata_build::BuildDefaults;
use strata_code::PackOptions;
use strata_kube::{Connection, KubeSettings};
use strata_queue::CancelResult;
use strata_queue::{EnvOptions, Environment, NewJob, OutputPath, SchedulerConfig};

use super::build::{build_defaults, NO_BASE};
use crate::output::{self, Failure};
use crate::progress::TerminalProgress;
use strata_server::types::SubmitRequest;
use strata_server::Remote;

#[derive(Args)]
pub struct SubmitArgs {
    #[arg(long, short = 'q', default_value = "default")]
    pub queue: String,
    #[arg(long, short = 't', default_value = "cpu")]
    pub tier: String,
    #[arg(long)]
    pub priority: Option<i64>,
    /// The job's environment: an environment file or project directory, as for `strata
    /// build -r` (built once per spec)…
    #[arg(
        short = 'r',
        long = "requirements",
        value_name = "FILE|DIR",
        conflicts_with = "image"
    )]
    pub requirements: Option<PathBuf>,
    /// An extra of the -r file to install (repeatable).
    #[arg(long = "extra", value_name = "NAME", requires = "requirements")]
    pub extras: Vec<String>,
    /// A dependency group of the -r file to install (repeatable).
    #[arg(long = "group", value_name = "NAME", requires = "requirements")]
    pub groups: Vec<String>,
    /// Install the -r project itself too (a pyproject.toml's or uv.lock's package).
    #[arg(long, requires = "requirements")]
    pub install_project: bool,
    /// …or an image of the local store (tag, digest or environment name); through a server,
    /// of the server's store, or `REGISTRY/REPO@sha256:...` in the team's repository.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Base image of the environment (with -r, or detected); default: `base` under [build]
    /// in strata.toml.
    #[arg(long, env = "STRATA_BASE", value_name = "REF")]
    pub base: Option<String>,
    #[arg(long, value_name = "X.Y")]
    pub python: Option<String>,
    #[arg(long = "find-links", short = 'f', value_name = "DIR")]
    pub find_links: Vec<String>,
    #[arg(long)]
    pub no_index: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Resolve the environment again when the job's build starts, even if its spec was built
    /// before (as `strata build --refresh`).
    #[arg(long, conflicts_with = "image")]
    pub refresh: bool,
    /// Time limit, e.g. 30m or 2h.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Attempts after the first, for retryable failures.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Exit codes that are worth a retry (repeatable).
    #[arg(long = "retry-on-exit", value_name = "CODE")]
    pub retry_on_exit: Vec<i32>,
    /// Retry when the job is killed for lack of memory.
    #[arg(long)]
    pub retry_on_oom: bool,
    /// Environment variable for the job (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container (default: the code's directory when code is
    /// shipped, else the image's).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// A directory (relative to the working directory, or absolute in the container)
    /// collected when the job ends, whatever its outcome (repeatable); `strata outputs JOB`.
    #[arg(long = "output", short = 'o', value_name = "DIR")]
    pub outputs: Vec<String>,
    /// Ship this directory's code with the job, at /work (default with -r: the current
    /// directory; with --image only when given). What `git ls-files --cached --others
    /// --exclude-standard` lists, or the .gitignore rules without git, minus .strataignore.
    #[arg(long, value_name = "DIR", conflicts_with = "no_code")]
    pub code: Option<PathBuf>,
    /// Ship no code: the job runs only what its image holds.
    #[arg(long)]
    pub no_code: bool,
    /// Ship files that look like secrets (.env, *.pem, ...) matching this glob (repeatable;
    /// without a '/' it matches a file name at any depth).
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Refuse to ship more code than this (e.g. 100MB, 1GB).
    #[arg(long, value_name = "SIZE", default_value = "100MB")]
    pub max_code_size: String,
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct JobsArgs {
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// Include finished jobs.
    #[arg(long, short = 'a')]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct JobArgs {
    pub job: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    pub job: String,
    /// Keep printing until the job ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Args)]
pub struct OutputsArgs {
    pub job: String,
    /// Copy the collected files into DIR (created if missing) instead of listing them.
    #[arg(long, value_name = "DIR", conflicts_with = "delete")]
    pub to: Option<PathBuf>,
    /// Remove the job's collected outputs (nothing else removes them).
    #[arg(long)]
    pub delete: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct MetricsArgs {
    #[arg(required = true)]
    pub jobs: Vec<String>,
    /// Only this metric.
    #[arg(long)]
    pub name: Option<String>,
    /// Write a PNG chart comparing the jobs.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// This machine, through runc.
    Local,
    /// A Kubernetes cluster, one batch/v1 Job per job.
    Kubernetes,
}

#[derive(Args)]
pub struct AgentArgs {
    /// Where jobs run.
    #[arg(long, value_enum, default_value = "local")]
    pub backend: BackendName,
    /// Kubeconfig for --backend kubernetes (default: `[kubernetes] kubeconfig`, $KUBECONFIG,
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Use the pod's service account (the agent runs in the cluster).
    #[arg(long)]
    pub in_cluster: bool,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
}

/// The server the job commands talk to, when one is set (STRATA_SERVER, `strata login`).
fn remote() -> Result<Option<Remote>, Failure> {
    Remote::from_env().map_err(Failure::remote)
}

fn client() -> Result<Client, Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let project = std::env::current_dir().unwrap_or_default();
    Client::open(&root, &project).map_err(Failure::jobs)
}

/// The directory whose code ships with the job, if any: `--code DIR`; else, for an
/// environment built from requirements, the current directory; never with `--no-code`.
fn code_root(args: &SubmitArgs) -> Option<PathBuf> {
    if args.no_code {
        return None;
    }
    match (&args.code, &args.image) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(PathBuf::from(".")),
    }
}

fn pack_options(args: &SubmitArgs) -> Result<PackOptions, Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let max_size =
        strata_code::parse_size(&args.max_code_size).map_err(|e| Failure::usage(&e.to_string()))?;
    Ok(PackOptions {
        include: args.include.clone(),
        max_size,
        dest: strata_code::DEFAULT_DEST.to_string(),
        cache_dir: Some(root.join("tmp").join("code-cache")),
        exclude: vec![root],
    })
}

pub fn submit(args: SubmitArgs) -> Result<(), Failure> {
    if let Some(remote) = remote()? {
        return submit_remote(&remote, args);
    }
    let client = client()?;
    let code_root = code_root(&args);
    let pack = pack_options(&args)?;
    let defaults = build_defaults()?;
    let mut env = parse_env(&args.env).map_err(|e| Failure::usage(&e.to_string()))?;
    let environment = match (&args.requirements, &args.image) {
        (Some(path), _) => Some(requirements_environment(&args, &defaults, path.clone())?),
        (None, Some(reference)) => Some(Environment::Image {
            reference: reference.clone(),
        }),
        (None, None) => {
            let Some(root) = &code_root else {
                return Err(Failure::usage(
                    "with --no-code there is nothing to detect the environment from: give -r FILE or --image REF",
                ));
            };
            let detected = detect(&args, root, &pack.dest)?;
            detected.add_python_path(&mut env);
            Some(requirements_environment(
                &args,
                &defaults,
                detected.requirements,
            )?)
        }
    };
    let timeout = match &args.timeout {
        Some(t) => {
            Some(strata_config::parse_duration(t).map_err(|e| Failure::usage(&e.to_string()))?)
        }
        None => None,
    };
    let outputs = args
        .outputs
        .iter()
        .map(|o| o.parse::<OutputPath>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(&e.to_string()))?;
    let job = NewJob {
        queue: args.queue.clone(),
        tier: args.tier.clone(),
        user: None,
        priority: args.priority,
        name: args.name.clone(),
        environment,
        image_digest: None,
        command: args.command.clone(),
        env,
        working_dir: args.workdir.clone(),
        outputs,
        timeout,
        retries: args.retries,
        retry_exit_codes: (!args.retry_on_exit.is_empty()).then(|| args.retry_on_exit.clone()),
        retry_on_oom: args.retry_on_oom.then_some(true),
        code: None,
        idempotency_key: None,
    };
    let code = code_root.as_deref().map(|root| (root, &pack));
    let submitted = client.submit_with_code(job, code).map_err(Failure::jobs)?;
    output::print_submitted(&submitted, args.json);
    Ok(())
}

/// A submit through a server, which never reads a path of this machine: `--image REF` goes
/// as it is (an image of the server's store, or of the team's registry by digest); an
/// environment from requirements (`-r`, or detected from the working tree) is built here,
/// the code added on top, and the image pushed to the team's registry repository first.
fn submit_remote(remote: &Remote, args: SubmitArgs) -> Result<(), Failure> {
    let mut env = parse_env(&args.env).map_err(|e| Failure::usage(&e.to_string()))?;
    let (image, code) = match &args.image {
        Some(_) if args.code.is_some() => {
            return Err(Failure::usage(
                "through a server, --image takes no --code: give -r FILE (the code is added and pushed), or bake the code into the image",
            ))
        }
        Some(image) => (image.clone(), None),
        None => {
            let published = publish(remote, &args, &mut env)?;
            (published.image, published.code)
        }
    };
    let workdir = args
        .workdir
        .clone()
        .or_else(|| code.as_ref().map(|c| c.dest.clone()));
    let request = SubmitRequest {
        queue: args.queue,
        tier: args.tier,
        image,
        command: args.command,
        name: args.name,
        priority: args.priority,
        env,
        workdir,
        outputs: args.outputs,
        timeout: args.timeout,
        retries: args.retries,
        retry_on_exit: args.retry_on_exit,
        retry_on_oom: args.retry_on_oom,
    };
    let id = remote.submit(&request).map_err(Failure::remote)?;
    let id = id
        .parse()
        .map_err(|e: strata_queue::JobIdError| Failure::usage(&e.to_string()))?;
    output::print_submitted(&strata_agent::Submitted { id, code }, args.json);
    Ok(())
}

/// The job's image built here from `-r` (or the requirements detected from the working
/// tree, whose import path goes into `env`), with the code on top, pushed to the team's
/// registry repository that the server names.
fn publish(
    remote: &Remote,
    args: &SubmitArgs,
    env: &mut std::collections::BTreeMap<String, String>,
) -> Result<strata_agent::Published, Failure> {
    let registry = remote.registry().map_err(Failure::remote)?;
    let Some(repository) = registry.repository else {
        return Err(Failure::usage(&format!(
            "{} names no registry for team {}, so -r and working trees cannot be sent: ask its admin to set [server] registry, or submit --image REF of the server's store",
            remote.server(),
            registry.team
        )));
    };
    let client = client()?;
    let code_root = code_root(args);
    let pack = pack_options(args)?;
    let defaults = build_defaults()?;
    let requirements = match (&args.requirements, &code_root) {
        (Some(path), _) => path.clone(),
        (None, Some(root)) => {
            let detected = detect(args, root, &pack.dest)?;
            detected.add_python_path(env);
            detected.requirements
        }
        (None, None) => {
            return Err(Failure::usage(
                "with --no-code there is nothing to detect the environment from: give -r FILE or --image REF",
            ))
        }
    };
    let options = env_options(args, &defaults)?;
    let progress = TerminalProgress::new(!args.json);
    let code = code_root.as_deref().map(|root| (root, &pack));
    let published = client
        .publish(&requirements, &options, code, &repository, &progress)
        .map_err(Failure::jobs)?;
    progress.finish();
    Ok(published)
}

/// An environment built from `path`, with the flags, else `[build]` of strata.toml.
fn requirements_environment(
    args: &SubmitArgs,
    defaults: &BuildDefaults,
    path: PathBuf,
) -> Result<Environment, Failure> {
    Ok(Environment::Requirements {
        path,
        spec_digest: None,
        options: env_options(args, defaults)?,
    })
}

/// How an environment from requirements is built: the flags, else `[build]` of strata.toml.
fn env_options(args: &SubmitArgs, defaults: &BuildDefaults) -> Result<EnvOptions, Failure> {
    let Some(base) = defaults.base_or(args.base.as_deref()) else {
        return Err(Failure::usage(NO_BASE));
    };
    Ok(EnvOptions {
        base,
        python: args.python.clone().or_else(|| defaults.python.clone()),
        platform: None,
        find_links: defaults.find_links_or(&args.find_links),
        no_index: args.no_index || defaults.no_index,
        name: args.name.clone().or_else(|| project_name(&args.code)),
        extras: args.extras.clone(),
        groups: args.groups.clone(),
        install_project: args.install_project,
        refresh: args.refresh,
    })
}

/// The environment's name when none is given: the project directory's.
fn project_name(code: &Option<PathBuf>) -> Option<String> {
    let dir = code.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = dir.canonicalize().ok()?;
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// The requirements of the code shipped from `root`, from its declared file or its imports
/// in the active environment; warnings and notes go to stderr.
fn detect(
    args: &SubmitArgs,
    root: &Path,
    dest: &str,
) -> Result<strata_agent::DetectedEnvironment, Failure> {
    let home = strata_build::Home::default_root().map_err(Failure::home)?;
    let python = match &args.python {
        Some(text) => Some(
            text.parse()
                .map_err(|e: strata_python::TargetError| Failure::usage(&e.to_string()))?,
        ),
        None => None,
    };
    let options = strata_detect::DetectOptions { python };
    let detected = strata_agent::detect_environment(
        &home,
        root,
        dest,
        &args.command,
        strata_detect::PythonEnv::discover,
        &options,
    )
    .map_err(Failure::detected)?;
    // On stderr, with --json too: stdout is the job.
    output::print_detected(&detected);
    Ok(detected)
}

pub fn jobs(args: JobsArgs) -> Result<(), Failure> {
    let views = match remote()? {
        Some(remote) => remote
            .views(args.queue.as_deref(), args.all)
            .map_err(Failure::remote)?,
        None => client()?
            .views(args.queue.as_deref(), args.all)
            .map_err(Failure::jobs)?,
    };
    output::print_job_views(&views, args.json);
    Ok(())
}

pub fn status(args: JobArgs) -> Result<(), Failure> {
    let status = match remote()? {
        Some(remote) => remote.status(&args.job).map_err(Failure::remote)?,
        None => client()?.status(&args.job).map_err(Failure::jobs)?,
    };
    output::print_job_status(&status, args.json);
    Ok(())
}

pub fn cancel(args: JobArgs) -> Result<(), Failure> {
    let result = match remote()? {
        Some(remote) => remote.cancel(&args.job).map_err(Failure::remote)?,
        None => client()?.cancel(&args.job).map_err(Failure::jobs)?,
    };
    let text = match result {
        CancelResult::Cancelled => "cancelled".to_string(),
        CancelResult::Requested => {
            "stopping (SIGTERM, then SIGKILL after the grace period)".to_string()
        }
        CancelResult::AlreadyFinished(state) => format!("already finished: {state}"),
    };
    output::print_json_or(
        &serde_json::json!({ "job": args.job, "result": text }),
        args.json,
        || text.clone(),
    );
    Ok(())
}

pub fn logs(args: LogsArgs) -> Result<(), Failure> {
    if let Some(remote) = remote()? {
        let mut stdout = std::io::stdout();
        if args.follow {
            return remote
                .follow_log(&args.job, &mut stdout)
                .map_err(Failure::remote);
        }
        let (bytes, _) = remote.log(&args.job, 0).map_err(Failure::remote)?;
        let _ = stdout.write_all(&bytes);
        return Ok(());
    }
    let client = client()?;
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let (bytes, finished) = client.log(&args.job, offset).map_err(Failure::jobs)?;
        offset += bytes.len() as u64;
        let _ = stdout.write_all(&bytes);
        let _ = stdout.flush();
        if !args.follow || finished {
            // One more read: lines written between the read and the state check.
            if args.follow {
                let (rest, _) = client.log(&args.job, offset).map_err(Failure::jobs)?;
                let _ = stdout.write_all(&rest);
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn outputs(args: OutputsArgs) -> Result<(), Failure> {
    if let Some(remote) = remote()? {
        return remote_outputs(&remote, &args);
    }
    let client = client()?;
    if args.delete {
        let deleted = client.delete_outputs(&args.job).map_err(Failure::jobs)?;
        print_deleted(&args.job, deleted, args.json);
        return Ok(());
    }
    let outputs = client.outputs(&args.job).map_err(Failure::jobs)?;
    if let Some(to) = &args.to {
        let copied = outputs.copy_to(to).map_err(|e| Failure::jobs(e.into()))?;
        print_copied(&args.job, to, copied, args.json);
        return Ok(());
    }
    output::print_outputs(&outputs, args.json);
    Ok(())
}

/// `strata outputs` through a server: the same listing, copy and delete.
fn remote_outputs(remote: &Remote, args: &OutputsArgs) -> Result<(), Failure> {
    if args.delete {
        let deleted = remote.delete_outputs(&args.job).map_err(Failure::remote)?;
        print_deleted(&args.job, deleted, args.json);
        return Ok(());
    }
    let outputs = remote.outputs(&args.job).map_err(Failure::remote)?;
    if let Some(to) = &args.to {
        let copied = remote
            .download_outputs(&outputs, to)
            .map_err(Failure::remote)?;
        print_copied(&args.job, to, copied, args.json);
        return Ok(());
    }
    output::print_outputs(&outputs, args.json);
    Ok(())
}

fn print_deleted(job: &str, deleted: bool, json: bool) {
    let text = if deleted {
        format!("deleted the outputs of {job}")
    } else {
        format!("{job} has no collected outputs")
    };
    output::print_json_or(
        &serde_json::json!({ "job": job, "deleted": deleted }),
        json,
        || text.clone(),
    );
}

fn print_copied(job: &str, to: &Path, copied: usize, json: bool) {
    output::print_json_or(
        &serde_json::json!({ "job": job, "to": to, "files": copied }),
        json,
        || format!("copied {copied} files to {}", to.display()),
    );
}

pub fn metrics(args: MetricsArgs) -> Result<(), Failure> {
    if let Some(remote) = remote()? {
        if args.plot.is_some() {
            return Err(Failure::usage(
                "--plot through a server is not supported yet",
            ));
        }
        let metrics = remote
            .metrics(&args.jobs, args.name.as_deref())
            .map_err(Failure::remote)?;
        output::print_metrics(&metrics, args.json);
        return Ok(());
    }
    let client = client()?;
    let metrics = client
        .metrics(&args.jobs, args.name.as_deref())
        .map_err(Failure::jobs)?;
    if let Some(path) = &args.plot {
        client.plot(&metrics, path).map_err(Failure::jobs)?;
    }
    output::print_metrics(&metrics, args.json);
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn agent(args: AgentArgs) -> Result<(), Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let project = std::env::current_dir().unwrap_or_default();
    let files =
        strata_config::Config::load(&project, &root).map_err(|e| Failure::jobs(e.into()))?;
    // From the files, not from `client()`: that one carries the pools the last agent
    // published, and this agent publishes its own.
    let config = SchedulerConfig::from_config(&files).map_err(|e| Failure::jobs(e.into()))?;
    let output_limits = strata_agent::output_limits(&files).map_err(|e| Failure::jobs(e.into()))?;
    let options = AgentOptions {
        tick: Duration::from_millis(args.tick_ms),
        grace: Duration::from_secs(args.grace),
        output_limits,
    };
    // SIGTERM/SIGINT end the loop between rounds; running jobs keep running (detached)
    // and are re-adopted by the next agent.
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    let choice = match args.backend {
        BackendName::Local => BackendChoice::Local(
            LauncherSettings::from_config(&files).map_err(|e| Failure::jobs(e.into()))?,
        ),
        BackendName::Kubernetes => {
            let mut settings = KubeSettings::from_config(&files)
                .map_err(|e| Failure::agent(AgentError::from(e)))?;
            if args.in_cluster {
                settings.connection = Connection::InCluster;
            } else if let Some(path) = &args.kubeconfig {
                // The flag replaces the file, not the `[kubernetes] context` chosen in it.
                let context = match &settings.connection {
                    Connection::Kubeconfig { context, .. } => context.clone(),
                    Connection::InCluster => None,
                };
                settings.connection = Connection::Kubeconfig {
                    path: Some(path.clone()),
                    context,
                };
            }
            BackendChoice::Kubernetes(settings)
        }
    };
    let mut agent = Agent::new(&root, config, options, choice).map_err(Failure::agent)?;
    eprintln!("strata agent: running (STRATA_HOME={})", root.display());
    agent.run(&STOP).map_err(Failure::agent)
}

impl Failure {
    pub fn jobs(error: ClientError) -> Failure {
        let exit_code = match &error {
            ClientError::Config(_)
            | ClientError::SchedulerConfig(_)
            | ClientError::Submit(_)
            | ClientError::Environment(_)
            | ClientError::Code(_)
            | ClientError::NoSuchJob(_) => output::EXIT_BAD_INPUT,
            // A new variant must be placed here on purpose: no catch-all.
            ClientError::Outputs(strata_agent::OutputsError::Io { .. }) => output::EXIT_STORE,
            ClientError::Outputs(_) => output::EXIT_BAD_INPUT,
            ClientError::Push { .. } => output::EXIT_REGISTRY,
            ClientError::Jobs(_)
            | ClientError::Metrics(_)
            | ClientError::Plot(_)
            | ClientError::Log { .. } => output::EXIT_STORE,
        };
        let hint = match &error {
            ClientError::Config(_) | ClientError::SchedulerConfig(_) => {
                Some("fix the key shown in strata.toml or $STRATA_HOME/config.toml")
            }
            ClientError::NoSuchJob(_) => Some("`strata jobs --all` lists the jobs"),
            ClientError::Code(_) => Some(
                "--no-code ships nothing; --code DIR ships another directory; .strataignore keeps files out",
            ),
            _ => None,
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code,
        }
    }

    pub fn detected(error: DetectedError) -> Failure {
        match error {
            DetectedError::Detect { source, .. } => Failure::detect(*source),
            DetectedError::LocalOutside { .. } => Failure {
                error: Box::new(error),
                hint: Some(
                    "ship a directory that holds it (--code DIR), or install it from an index",
                ),
                exit_code: output::EXIT_BAD_INPUT,
            },
            DetectedError::Write { .. } => Failure::store(error),
        }
    }

    pub fn agent(error: AgentError) -> Failure {
        let hint = if error.is_kube() {
            Some(
                "check the kubeconfig (--kubeconfig or [kubernetes] kubeconfig), the namespaces of the queues, and deploy/rbac-*.yaml",
            )
        } else {
            Some("is runc installed, and does strata run as root?")
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code: output::EXIT_FAILURE,
        }
    }

    pub fn usage(message: &str) -> Failure {
        Failure {
            error: message.to_string().into(),
            hint: None,
            exit_code: 2,
        }
    }
}
