use super::output::{bytes, ratio, short, Output};
use super::Error;
use crate::api::Repository;
use crate::model::sample::SampleSize;
use crate::model::Options;

/// Estimate what `add` would store for a source, from a sample, without writing anything.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory, a .safetensors file, or hf:ORG/NAME[@REVISION].
    pub source: String,
    /// Estimate deltas against this revision, or `auto` (as `add --base`).
    #[arg(long)]
    pub base: Option<String>,
    /// Chunks sampled per file, at positions spread evenly over its tensor bytes. Tables and
    /// text files with a counterpart in the base are compared row by row in full: whether a row
    /// is in the base cannot be sampled without reading all of the base's rows anyway.
    #[arg(long, default_value_t = SampleSize::default().tensors)]
    pub sample_size: usize,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let size = SampleSize {
        tensors: args.sample_size,
        ..SampleSize::default()
    };
    let report = repo.estimate(&args.source, args.base.as_deref(), &Options::from_env(), size)?;
    out.emit(&report, |r| {
        let e = &r.estimate;
        let against = r
            .base
            .as_deref()
            .map(|b| format!(" against {}", short(b)))
            .unwrap_or_default();
        format!(
            "{}: raw {}; expected in store{against}: {} ({}); alone: {} ({})\n\
             {} of {} tensors have a parent; {} paired with the base's bytes; sampled {} in {:.2} s",
            r.source,
            bytes(e.raw_bytes),
            bytes(e.bytes),
            ratio(e.bytes, e.raw_bytes),
            bytes(e.alone_bytes),
            ratio(e.alone_bytes, e.raw_bytes),
            e.matched_tensors,
            e.tensors,
            bytes(e.matched_bytes),
            bytes(e.sampled_bytes),
            r.seconds
        ) + &match e.record_files {
            0 => String::new(),
            n => format!(
                "\n{n} tables compared with the base record by record or row by row: {} of their {} are new",
                bytes(e.new_record_bytes),
                bytes(e.record_bytes)
            ),
        }
    });
    Ok(0)
}
