use super::output::{bytes, short, Output};
use super::Error;
use crate::api::remote::SyncReport;
use crate::api::Repository;

/// Send names and what they reach to a remote store, then move its names (fast-forward only).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A remote's name, a store's path, or an http(s):// or s3:// URL.
    pub remote: String,
    /// The names to push (default: every name and tag).
    pub names: Vec<String>,
    /// Move the remote's names even where that is not a fast-forward.
    #[arg(long, short)]
    pub force: bool,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = super::progress::objects("push", out.json);
    let report = repo.push(&args.remote, &args.names, args.force, &super::progress::callback(&bar))?;
    bar.finish_and_clear();
    out.emit(&report, text);
    Ok(0)
}

/// The text of a transfer's report (push, fetch, pull, clone).
pub fn text(r: &SyncReport) -> String {
    let mut s = format!(
        "{}: sent {} objects ({} blobs, {}), {} already there ({})\n",
        r.remote,
        r.objects_sent,
        r.blobs_sent,
        bytes(r.bytes_sent),
        r.objects_skipped,
        bytes(r.bytes_skipped)
    );
    for u in &r.refs {
        let old = u.old.as_deref().map(short).unwrap_or("-");
        s.push_str(&format!("  {:<12} {} {} -> {}\n", u.status, u.name, old, short(&u.new)));
    }
    s
}
