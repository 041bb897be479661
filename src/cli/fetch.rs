use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Receive a remote's names and tags and what they reach; its names become
/// `refs/remotes/REMOTE/NAME`, its tags are created where absent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A remote's name, or the path of a store.
    pub remote: String,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.fetch(&args.remote)?;
    out.emit(&report, super::push::text);
    Ok(0)
}
