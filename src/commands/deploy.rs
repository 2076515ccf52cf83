//! `strata deploy`: prints the Kubernetes objects that run strata for a set of teams.

use clap::Args;
use strata_deploy::{render, Label, Options, DEFAULT_NAMESPACE, DEFAULT_STORAGE};

use crate::output::Failure;

#[derive(Args)]
pub struct DeployArgs {
    /// The teams, comma-separated: each gets a namespace, a queue and a Role for the agent.
    #[arg(long, value_delimiter = ',', required = true, value_name = "TEAM,...")]
    pub teams: Vec<Label>,
    /// Where job images are pulled from: REGISTRY/REPO (`[kubernetes] registry`).
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub registry: String,
    /// strata's own namespace (the agent, its volume and configuration).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: Label,
    /// strata's image (default: REGISTRY/strata:VERSION, where `scripts/build-image` output is
    /// pushed; see deploy/README.md). A digest reference pins it.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Size of the volume that holds the queue database, logs and metrics.
    #[arg(long, default_value = DEFAULT_STORAGE)]
    pub storage: String,
}

pub fn run(args: DeployArgs) -> Result<(), Failure> {
    let image = args.image.unwrap_or_else(|| default_image(&args.registry));
    let options = Options {
        namespace: args.namespace,
        teams: args.teams,
        registry: args.registry,
        image,
        storage: args.storage,
    };
    let yaml = render(&options)
        .and_then(|manifests| manifests.to_yaml())
        .map_err(Failure::deploy)?;
    print!("{yaml}");
    Ok(())
}

/// `HOST/strata:VERSION` for the registry host of `REGISTRY/REPO`: the tag
/// deploy/README.md tells the platform team to push strata's image to.
fn default_image(registry: &str) -> String {
    let host = registry.split('/').next().unwrap_or(registry);
    format!("{host}/strata:{}", env!("CARGO_PKG_VERSION"))
}
