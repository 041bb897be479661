//! The command line: argument parsing (clap), one module per verb, text or `--json` output.

mod add;
mod checkout;
mod clone;
mod commit;
mod diff;
mod estimate;
mod family;
mod fetch;
mod fsck;
mod gc;
mod init;
mod log;
mod output;
mod progress;
mod pull;
mod push;
mod refs;
mod remote;
mod serve;
mod show;
mod status;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::Repository;

/// A content-addressed store for ML models: every fine-tune a commit of tensor deltas on its base.
#[derive(Debug, Parser)]
#[command(name = "sparse", version, about)]
pub struct Cli {
    /// Run as if started in PATH (the store is found there or in a parent; PATH may be the store itself).
    #[arg(short = 'C', global = true, value_name = "PATH")]
    pub cwd: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Add(add::Args),
    Commit(commit::Args),
    Checkout(checkout::Args),
    Log(log::Args),
    Show(show::Args),
    Diff(diff::Args),
    Estimate(estimate::Args),
    Validate(validate::Args),
    Family(family::Args),
    /// Show what is staged and the names in the store.
    Status,
    /// List model names, create one at a revision (NAME REV), or delete one (-d NAME).
    Branch(refs::RefArgs),
    /// List tags, create one at a revision (TAG REV), or delete one (-d TAG).
    Tag(refs::RefArgs),
    Fsck(fsck::Args),
    Gc(gc::Args),
    Remote(remote::Args),
    Push(push::Args),
    Fetch(fetch::Args),
    Pull(pull::Args),
    Clone(clone::Args),
    Serve(serve::Args),
}

/// What a verb failed with: any error of the library, shown with its causes.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Parses the arguments, runs the verb, and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // Every error's message already includes the messages of its causes.
            eprintln!("error: {e}");
            1
        }
    }
}

fn run(cli: &Cli) -> Result<i32, Error> {
    // Like git: relative paths in the arguments are taken from PATH too.
    if let Some(dir) = &cli.cwd {
        std::env::set_current_dir(dir).map_err(|e| format!("cannot use -C {}: {e}", dir.display()))?;
    }
    let start = PathBuf::from(".");
    let out = output::Output { json: cli.json };
    if let Command::Init(args) = &cli.command {
        return init::run(&start, args, &out);
    }
    if let Command::Clone(args) = &cli.command {
        return clone::run(&start, args, &out);
    }
    let repo = Repository::discover(&start)?;
    match &cli.command {
        Command::Init(_) | Command::Clone(_) => unreachable!("handled above"),
        Command::Add(args) => add::run(&repo, args, &out),
        Command::Commit(args) => commit::run(&repo, args, &out),
        Command::Checkout(args) => checkout::run(&repo, args, &out),
        Command::Log(args) => log::run(&repo, args, &out),
        Command::Show(args) => show::run(&repo, args, &out),
        Command::Diff(args) => diff::run(&repo, args, &out),
        Command::Estimate(args) => estimate::run(&repo, args, &out),
        Command::Validate(args) => validate::run(&repo, args, &out),
        Command::Family(args) => family::run(&repo, args, &out),
        Command::Status => status::run(&repo, &out),
        Command::Branch(args) => refs::branch(&repo, args, &out),
        Command::Tag(args) => refs::tag(&repo, args, &out),
        Command::Fsck(args) => fsck::run(&repo, args, &out),
        Command::Gc(args) => gc::run(&repo, args, &out),
        Command::Remote(args) => remote::run(&repo, args, &out),
        Command::Push(args) => push::run(&repo, args, &out),
        Command::Fetch(args) => fetch::run(&repo, args, &out),
        Command::Pull(args) => pull::run(&repo, args, &out),
        Command::Serve(args) => serve::run(&repo, args),
    }
}
