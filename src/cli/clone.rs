use std::path::{Path, PathBuf};

use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Copy a store: create DIR/.sparse, fetch every name and tag of the store at URL (remote
/// `origin`) and create a local name for each of its names.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store to copy: a path (a store, or a directory holding `.sparse`),
    /// `http(s)://HOST:PORT` or `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Where to create the new store.
    pub dir: PathBuf,
}

pub fn run(start: &Path, args: &Args, out: &Output) -> Result<i32, Error> {
    let dir = match &args.dir {
        d if d.is_absolute() => d.clone(),
        d => start.join(d),
    };
    let bar = super::progress::objects("clone", out.json);
    let (_, report) = Repository::clone_from(&args.url, &dir, &super::progress::callback(&bar))?;
    bar.finish_and_clear();
    out.emit(&report, super::push::text);
    Ok(0)
}
