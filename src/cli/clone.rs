use std::path::{Path, PathBuf};

use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Copy a store: create DIR/.sparse, fetch every name and tag of the store at PATH (remote
/// `origin`) and create a local name for each of its names.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store to copy (a store, or a directory holding `.sparse`).
    pub path: PathBuf,
    /// Where to create the new store.
    pub dir: PathBuf,
}

pub fn run(start: &Path, args: &Args, out: &Output) -> Result<i32, Error> {
    let dir = match &args.dir {
        d if d.is_absolute() => d.clone(),
        d => start.join(d),
    };
    let (_, report) = Repository::clone_from(&args.path, &dir)?;
    out.emit(&report, super::push::text);
    Ok(0)
}
