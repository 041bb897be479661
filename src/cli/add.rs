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
    /// zstd level of the byte planes, 1 to 22 (default 1, or SPARSE_ZSTD_LEVEL). Higher is
    /// smaller and slower to add; checkout speed hardly changes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: Option<i32>,
    /// Bytes per chunk (default 4 MiB, or SPARSE_CHUNK_SIZE), rounded to whole elements. A tensor
    /// coded against a parent keeps the parent's chunk size, so that chunks pair up.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=(256 << 20)))]
    pub chunk_size: Option<u64>,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = progress::bytes("add", out.json);
    let mut opts = Options::from_env();
    opts.level = args.zstd_level.unwrap_or(opts.level);
    opts.chunk_size = args.chunk_size.unwrap_or(opts.chunk_size);
    let report = repo.add(
        &args.source,
        &args.name,
        args.base.as_deref(),
        &opts,
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
