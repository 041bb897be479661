use super::output::{bytes, ratio, short, Output};
use super::Error;
use crate::api::Repository;

/// Record everything staged as commits, one per name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The commit message.
    #[arg(long, short)]
    pub message: String,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.commit(&args.message)?;
    out.emit(&report, |r| {
        r.commits
            .iter()
            .map(|c| {
                format!(
                    "[{} {}] {}: raw {}, stored {} ({})\n",
                    c.name,
                    short(&c.commit),
                    args.message.lines().next().unwrap_or_default(),
                    bytes(c.raw_bytes),
                    bytes(c.stored_bytes),
                    ratio(c.stored_bytes, c.raw_bytes)
                )
            })
            .collect()
    });
    Ok(0)
}
