use std::io::Write;
use std::path::PathBuf;

use super::Error;
use crate::api::Repository;
use crate::serve::auth::Tokens;
use crate::serve::{self, Options};

/// Serve this store over HTTP for push, fetch, pull and clone (docs/PROTOCOL.md, "HTTP").
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8470")]
    pub bind: String,
    /// A file of tokens, one per line: `read TOKEN` or `write TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Let requests without a token read (never write).
    #[arg(long)]
    pub anonymous_read: bool,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = crate::transport::MAX_OBJECT as usize)]
    pub max_body: usize,
}

pub fn run(repo: &Repository, args: &Args) -> Result<i32, Error> {
    let tokens = match &args.token_file {
        Some(path) => Tokens::load(path, args.anonymous_read)?,
        None => Tokens::none(args.anonymous_read),
    };
    let options = Options {
        bind: args.bind.clone(),
        tokens,
        max_body: args.max_body,
    };
    let root = repo.layout.root.clone();
    serve::run(&root, options, |addr| {
        // One line on stdout, flushed, so that whoever started the server can find the port.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(0)
}
