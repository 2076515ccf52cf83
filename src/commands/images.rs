//! `strata images` and `strata inspect`.

use clap::Args;
use strata_index::Catalog;

use crate::output::{self, Failure};

#[derive(Args)]
pub struct ImagesArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A tag, a manifest digest (or 12+ hex digits of it), or a spec digest.
    pub reference: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn catalog() -> Result<Catalog, Failure> {
    let home = super::open_home()?;
    Catalog::load(&home.store, &home.index).map_err(Failure::store)
}

pub fn run_images(args: ImagesArgs) -> Result<(), Failure> {
    output::print_images(&catalog()?, args.json);
    Ok(())
}

pub fn run_inspect(args: InspectArgs) -> Result<(), Failure> {
    let catalog = catalog()?;
    let Some(image) = catalog.find(&args.reference) else {
        return Err(Failure::not_found(format!(
            "no image {:?} in the local store",
            args.reference
        )));
    };
    output::print_inspect(image, args.json);
    Ok(())
}
