//! `strata push` and `strata pull`.

use clap::Args;
use strata_build::{pull, PushTarget};
use strata_index::Catalog;
use strata_python::Platform;

use crate::output::{self, Failure};
use crate::progress::TerminalProgress;

#[derive(Args)]
pub struct PushArgs {
    /// The local image: a tag, a manifest digest (or 12+ hex digits) or a spec digest.
    pub reference: String,
    /// REGISTRY/REPO to push to.
    pub target: String,
    /// The tag in the registry (default: the local tag).
    #[arg(long)]
    pub tag: Option<String>,
    /// Allow plain HTTP to a non-loopback registry.
    #[arg(long)]
    pub insecure: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY/REPO[:TAG|@DIGEST].
    pub reference: String,
    #[arg(long, default_value = "linux/amd64")]
    pub platform: Platform,
    #[arg(long)]
    pub insecure: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run_push(args: PushArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let catalog = Catalog::load(&home.store, &home.index).map_err(Failure::store)?;
    let (digest, local_tag) = match catalog.find(&args.reference) {
        Some(image) => (image.digest.clone(), image.tag.clone()),
        // An untagged image of the store by its full digest (a job's image with its code):
        // tagged in the registry as the Kubernetes launcher tags it.
        None => match args.reference.parse::<strata_oci::Digest>() {
            Ok(digest) if home.store.has_blob(&digest) => {
                let tag = format!("job-{}", digest.short(16));
                (digest, tag)
            }
            _ => {
                return Err(Failure::not_found(format!(
                    "no image {:?} in the local store",
                    args.reference
                )))
            }
        },
    };
    let tag = args.tag.clone().unwrap_or(local_tag);
    let target = PushTarget::new(&args.target, args.insecure).map_err(Failure::build)?;
    let progress = TerminalProgress::new(!args.json);
    let pushed = target
        .push(&home, &digest, &tag, &progress)
        .map_err(Failure::build)?;
    progress.finish();
    output::print_warnings(&pushed.warnings);
    output::print_json_or(&pushed, args.json, || {
        format!("{}\n  {}", pushed.image, output::uploaded_text(&pushed))
    });
    Ok(())
}

pub fn run_pull(args: PullArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let progress = TerminalProgress::new(!args.json);
    let pulled = pull(
        &home,
        &args.reference,
        args.insecure,
        args.platform,
        &progress,
    )
    .map_err(Failure::build)?;
    progress.finish();
    output::print_json_or(&pulled, args.json, || {
        format!(
            "oci:{}:{}\n  digest {}\n  {} bytes downloaded",
            home.store.root().display(),
            pulled.tag,
            pulled.digest,
            pulled.bytes_downloaded
        )
    });
    Ok(())
}
