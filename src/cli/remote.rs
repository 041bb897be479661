use std::path::PathBuf;

use clap::Subcommand;

use super::output::Output;
use super::Error;
use crate::api::remote::RemoteRow;
use crate::api::Repository;

/// Manage remotes: other stores, named by path, to push to and fetch from.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<RemoteCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add remote NAME for the store at PATH (a store, or a directory holding `.sparse`).
    Add { name: String, path: PathBuf },
    /// Remove remote NAME and its remote-tracking names.
    Remove { name: String },
    /// List the remotes (the default).
    List,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    match args.command.as_ref().unwrap_or(&RemoteCommand::List) {
        RemoteCommand::Add { name, path } => {
            let row = repo.remote_add(name, path)?;
            out.emit(&row, |r| format!("added remote {} ({})", r.name, r.path.display()));
        }
        RemoteCommand::Remove { name } => {
            let row = repo.remote_remove(name)?;
            out.emit(&row, |r| format!("removed remote {} ({})", r.name, r.path.display()));
        }
        RemoteCommand::List => {
            let rows = repo.remotes()?;
            out.emit(&serde_json::json!({ "remotes": rows }), |_| list(&rows));
        }
    }
    Ok(0)
}

fn list(rows: &[RemoteRow]) -> String {
    rows.iter()
        .map(|r| format!("{:<16} {}\n", r.name, r.path.display()))
        .collect()
}
