use clap::Subcommand;

use super::output::Output;
use super::Error;
use crate::api::remote::RemoteRow;
use crate::api::Repository;

/// Manage remotes: other stores (a path, an http(s):// server, an s3:// bucket) to push to and fetch from.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<RemoteCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add remote NAME for URL: a store's path (or a directory holding `.sparse`),
    /// `http(s)://HOST:PORT` (a `sparse serve`) or `s3://BUCKET/PREFIX`.
    Add { name: String, url: String },
    /// Remove remote NAME and its remote-tracking names.
    Remove { name: String },
    /// List the remotes (the default).
    List,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    match args.command.as_ref().unwrap_or(&RemoteCommand::List) {
        RemoteCommand::Add { name, url } => {
            let row = repo.remote_add(name, url)?;
            out.emit(&row, |r| format!("added remote {} ({})", r.name, r.url));
        }
        RemoteCommand::Remove { name } => {
            let row = repo.remote_remove(name)?;
            out.emit(&row, |r| format!("removed remote {} ({})", r.name, r.url));
        }
        RemoteCommand::List => {
            let rows = repo.remotes()?;
            out.emit(&serde_json::json!({ "remotes": rows }), |_| list(&rows));
        }
    }
    Ok(0)
}

fn list(rows: &[RemoteRow]) -> String {
    rows.iter().map(|r| format!("{:<16} {}\n", r.name, r.url)).collect()
}
