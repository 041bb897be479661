use super::output::{bytes, ratio, short, utc, Output};
use super::Error;
use crate::api::log::Entry;
use crate::api::Repository;

/// Show the commits of a name (default: every name), newest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A name or revision.
    pub name: Option<String>,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let entries = repo.log(args.name.as_deref())?;
    out.emit(&serde_json::json!({ "commits": entries }), |_| {
        entries.iter().map(describe).collect::<Vec<_>>().join("\n")
    });
    Ok(0)
}

pub fn describe(e: &Entry) -> String {
    let names = if e.names.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.names.join(", "))
    };
    let base = e
        .base
        .as_deref()
        .map(|b| format!("base {}  ", short(b)))
        .unwrap_or_default();
    let lossy = e
        .lossy
        .as_deref()
        .map(|t| format!("LOSSY ({t}): checkout gives back an approximation\n"))
        .unwrap_or_default();
    format!(
        "commit {}{names}\nAuthor: {}\nDate:   {}\n{lossy}{base}raw {}  coded {} ({})\n\n    {}\n",
        e.commit,
        e.author,
        utc(e.time),
        bytes(e.raw_bytes),
        bytes(e.coded_bytes),
        ratio(e.coded_bytes, e.raw_bytes),
        e.message.replace('\n', "\n    ")
    )
}
