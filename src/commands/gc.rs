//! `strata gc`: the local store, or with `--registry` a repository of a registry.

use clap::Args;
use strata_gc::local::GcPlan;
use strata_gc::registry::RegistryGcReport;
use strata_gc::run::{self as collect, LocalOutcome, PolicyOverrides};

use crate::output::{self, Failure};

#[derive(Args)]
pub struct GcArgs {
    /// Collect REGISTRY/REPO instead of the local store.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub registry: Option<String>,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep images used within this many days (default 14; `[gc] keep_days`).
    #[arg(long)]
    pub keep_days: Option<u32>,
    /// Keep the newest K images of each environment name (default 3; `[gc] keep_newest`).
    #[arg(long)]
    pub keep_newest: Option<u32>,
    /// Keep images whose tag matches this pattern (`*`, `?`; repeatable; `[gc] keep_tags`).
    #[arg(long = "keep-tag", value_name = "PATTERN")]
    pub keep_tags: Vec<String>,
    /// Never sweep blobs younger than this (default 1h; `[gc] grace`).
    #[arg(long)]
    pub grace: Option<String>,
    /// Allow plain HTTP to a non-loopback registry.
    #[arg(long)]
    pub insecure: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GcArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let project = std::env::current_dir().unwrap_or_default();
    let overrides = PolicyOverrides {
        keep_days: args.keep_days,
        keep_newest: args.keep_newest,
        keep_tags: args.keep_tags.clone(),
        grace: args.grace.clone(),
    };
    let policy = collect::policy(&home.root, &project, &overrides).map_err(Failure::gc)?;
    if let Some(target) = &args.registry {
        let report =
            collect::collect_registry(&home.index, target, args.insecure, &policy, args.dry_run)
                .map_err(Failure::gc)?;
        output::print_json_or(&report, args.json, || registry_text(&report));
        return Ok(());
    }
    let rootfs = home.root.join("rootfs");
    let outcome = collect::collect_local(
        &home.store,
        &home.index,
        Some(&rootfs),
        &policy,
        args.dry_run,
    )
    .map_err(Failure::gc)?;
    output::print_json_or(&outcome, args.json, || local_text(&outcome));
    Ok(())
}

fn local_text(outcome: &LocalOutcome) -> String {
    match outcome {
        LocalOutcome::Planned(plan) => plan_text(plan),
        LocalOutcome::Swept(report) => {
            let mut out = String::new();
            for image in &report.deleted_images {
                out.push_str(&format!(
                    "deleted {} ({})\n",
                    image.tag,
                    image.manifest.short(12)
                ));
            }
            for image in &report.kept {
                out.push_str(&format!("kept    {} ({:?})\n", image.tag, image.reasons));
            }
            for skipped in &report.skipped_rootfs {
                out.push_str(&format!(
                    "left    unpacked layer {} ({:?})\n",
                    skipped.what, skipped.why
                ));
            }
            out.push_str(&format!(
                "{} images deleted, {} blobs deleted, {} unpacked layers removed ({} bytes), {} bytes freed",
                report.deleted_images.len(),
                report.deleted_blobs,
                report.deleted_rootfs_layers,
                report.deleted_rootfs_bytes,
                report.bytes_freed
            ));
            out
        }
    }
}

fn plan_text(plan: &GcPlan) -> String {
    let mut out = String::from("dry run: nothing was deleted\n");
    for image in &plan.pruned {
        out.push_str(&format!(
            "would delete {} ({})\n",
            image.tag,
            image.manifest.short(12)
        ));
    }
    for image in &plan.kept {
        out.push_str(&format!(
            "keep         {} ({:?})\n",
            image.tag, image.reasons
        ));
    }
    for unreadable in &plan.unreadable {
        out.push_str(&format!(
            "unreadable   {} {}: {} (gc refuses to sweep until it is repaired or removed)\n",
            unreadable.tag.as_deref().unwrap_or("-"),
            unreadable.digest,
            unreadable.error
        ));
    }
    out.push_str(&format!(
        "{} images, {} blobs and {} unpacked layers would go, freeing {} bytes",
        plan.pruned.len(),
        plan.blobs.len(),
        plan.rootfs.len(),
        plan.bytes_freed
    ));
    out
}

fn registry_text(report: &RegistryGcReport) -> String {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut out = String::new();
    for m in &report.deleted {
        let m = &m.manifest;
        out.push_str(&format!("{verb} {} {:?}\n", m.digest.short(12), m.tags));
    }
    for m in &report.kept {
        let reasons: Vec<String> = m.reasons.iter().map(ToString::to_string).collect();
        let reasons = reasons.join("; ");
        let m = &m.manifest;
        out.push_str(&format!(
            "kept {} {:?}: {reasons}\n",
            m.digest.short(12),
            m.tags
        ));
    }
    out.push_str(&format!(
        "{}: {} manifests {verb}, {} kept, {} bytes freed (run the registry's garbage-collect to reclaim them)",
        report.target,
        report.deleted.len(),
        report.kept.len(),
        report.bytes_freed
    ));
    out
}
