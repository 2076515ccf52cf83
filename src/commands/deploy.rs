//! `strata deploy`: prints deploy/'s manifests rendered for a set of teams.

use clap::Args;
use strata_kube::{DeployOptions, ImageVersion};

use crate::output::{self, Failure};

#[derive(Args)]
pub struct DeployArgs {
    /// The teams' namespaces, comma-separated: each gets the agent's Role, RoleBinding and
    /// the no-network NetworkPolicy.
    #[arg(long, value_delimiter = ',', required = true)]
    pub teams: Vec<String>,
    /// Where strata's image was pushed (REGISTRY[/PATH]): the image is REGISTRY/strata.
    #[arg(long)]
    pub registry: String,
    /// The agent's namespace.
    #[arg(long, default_value = "strata")]
    pub namespace: String,
    /// Name the image by this digest (sha256:..., printed by scripts/build-image) instead of
    /// the tag of this strata's version.
    #[arg(long)]
    pub digest: Option<String>,
}

pub fn run(args: DeployArgs) -> Result<(), Failure> {
    let options = DeployOptions {
        namespace: args.namespace,
        teams: args.teams,
        registry: args.registry,
        version: match args.digest {
            Some(digest) => ImageVersion::Digest(digest),
            None => ImageVersion::Tag(env!("CARGO_PKG_VERSION").to_string()),
        },
    };
    let bad_input = |e: strata_kube::DeployError| Failure {
        error: Box::new(e),
        hint: None,
        exit_code: output::EXIT_BAD_INPUT,
    };
    let objects = strata_kube::render_deploy(&options).map_err(bad_input)?;
    let yaml = strata_kube::deploy_yaml(&objects).map_err(bad_input)?;
    print!("{yaml}");
    Ok(())
}
