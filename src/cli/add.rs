use super::output::{bytes, ratio, short, Output};
use super::{progress, Error};
use crate::api::Repository;
use crate::model::Options;

/// Stage a model (directory, .safetensors file, or hf:ORG/NAME[@REV]) under a name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory, a .safetensors file, or hf:ORG/NAME[@REVISION] from the local Hugging Face cache.
    pub source: String,
    /// The name to stage it under (its ref: refs/heads/NAME).
    #[arg(long, short)]
    pub name: String,
    /// Store tensors as lossless deltas against the same-named tensors of this revision.
    #[arg(long)]
    pub base: Option<String>,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = progress::bytes("add", out.json);
    let report = repo.add(
        &args.source,
        &args.name,
        args.base.as_deref(),
        &Options::from_env(),
        &progress::callback(&bar),
    )?;
    bar.finish_and_clear();
    out.emit(&report, |r| {
        let s = &r.staged;
        let base = s.base.as_deref().map(|b| format!(" on base {}", short(b))).unwrap_or_default();
        format!(
            "staged {} ({} files, {} tensors){base}: raw {}, coded {} ({}), new in store {} ({})\n(use `sparse commit -m MSG` to record it)",
            s.name,
            r.files,
            r.tensors,
            bytes(s.raw_bytes),
            bytes(s.coded_bytes),
            ratio(s.coded_bytes, s.raw_bytes),
            bytes(s.stored_bytes),
            ratio(s.stored_bytes, s.raw_bytes),
        )
    });
    Ok(0)
}
