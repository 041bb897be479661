use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Receive a remote's names and tags and what they reach; the names of a remote added with
/// `sparse remote add` become `refs/remotes/REMOTE/NAME`, its tags are created where absent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A remote's name (`sparse remote add`); a path or URL is pulled from instead.
    pub remote: String,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = super::progress::objects("fetch", out.json);
    let report = repo.fetch(&args.remote, &super::progress::callback(&bar))?;
    bar.finish_and_clear();
    out.emit(&report, super::push::text);
    Ok(0)
}
