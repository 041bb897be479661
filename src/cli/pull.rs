use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Fetch names from a remote (only what they need), then move local names to its tips
/// (fast-forward only).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A remote's name, a store's path, or an http(s):// or s3:// URL.
    pub remote: String,
    /// The names to update (default: every name of the remote).
    pub names: Vec<String>,
    /// Move local names even where that is not a fast-forward.
    #[arg(long, short)]
    pub force: bool,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = super::progress::objects("pull", out.json);
    let report = repo.pull(&args.remote, &args.names, args.force, &super::progress::callback(&bar))?;
    bar.finish_and_clear();
    out.emit(&report, super::push::text);
    Ok(0)
}
