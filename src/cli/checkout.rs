use std::path::PathBuf;

use super::output::{bytes, short, Output};
use super::{progress, Error};
use crate::api::Repository;
use crate::model::table::convert::Target;

/// Write the full model of a revision into a directory, every file byte-identical (Parquet and
/// Arrow tables stored as row deltas: table-identical, the same schema, values and row order).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAME, NAME~N, a tag, or a commit id prefix.
    pub rev: String,
    /// The output directory (created; must be empty unless --force).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Write into a directory that is not empty, replacing files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Write tables in this format: Parquet and Arrow tables as CSV or JSON Lines, CSV, TSV and
    /// JSON Lines as Parquet (their column types inferred by arrow over the whole file). The
    /// converted file takes the format's extension and replaces the original in the output.
    #[arg(long, value_enum)]
    pub format: Option<Target>,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = progress::bytes("checkout", out.json);
    let report = repo.checkout(
        &args.rev,
        &args.output,
        args.force,
        args.format,
        &progress::callback(&bar),
    )?;
    bar.finish_and_clear();
    out.emit(&report, |r| {
        let mut text = format!(
            "checked out {} ({}) into {}: {} files, {}, every chunk verified",
            args.rev,
            short(&r.commit),
            r.dir.display(),
            r.files,
            bytes(r.bytes)
        );
        for (from, to) in &r.converted {
            text.push_str(&format!("\n{from}: written as {to}"));
        }
        for t in &r.tables {
            text.push_str(&format!(
                "\n{t}: rebuilt from row deltas, table-identical (same schema, values and row order; its rows' hash verified), not byte-identical"
            ));
        }
        text
    });
    Ok(0)
}
