use clap::Args as ClapArgs;

use super::output::{bytes, Output};
use super::Error;
use crate::api::Repository;

/// Delete the blobs and git objects no name, tag or staged model reaches (`branch -d` and
/// `tag -d` are what make them unreachable).
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Only report what would be deleted.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.gc(args.dry_run)?;
    out.emit(&report, |r| {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        format!(
            "{verb} {} blobs ({}) and {} git objects ({}); {} blobs kept",
            r.blobs_removed,
            bytes(r.blob_bytes),
            r.objects_removed,
            bytes(r.object_bytes),
            r.blobs_kept
        )
    });
    Ok(0)
}
