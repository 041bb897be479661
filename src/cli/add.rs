use super::output::{bytes, ratio, short, Output};
use super::{progress, Error};
use crate::api::auto_base::{Candidate, Choice};
use crate::api::Repository;
use crate::codec::lossy::{Target, Tier};
use crate::model::table::check::Kind;
use crate::model::Options;

/// Stage a model (directory, .safetensors file, or hf:ORG/NAME[@REV]) under a name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory, a .safetensors file, or hf:ORG/NAME[@REVISION] from the local Hugging Face cache.
    pub source: String,
    /// The name to stage it under (its ref: refs/heads/NAME).
    #[arg(long, short)]
    pub name: String,
    /// Store tensors as lossless deltas against the same-named tensors of this revision, or
    /// `auto`: the committed model whose tensors this source is closest to (compared by names
    /// and shapes, then by coding a sample against each), or none if storing alone is smaller.
    #[arg(long)]
    pub base: Option<String>,
    /// Longest chain of delta bases allowed (default 4, or SPARSE_MAX_DEPTH): a base deeper than
    /// this is replaced by its nearest ancestor that keeps the chain within it.
    #[arg(long)]
    pub max_depth: Option<usize>,
    /// zstd level of the byte planes, 1 to 22 (default 1, or SPARSE_ZSTD_LEVEL). Higher is
    /// smaller and slower to add; checkout speed hardly changes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: Option<i32>,
    /// Bytes per chunk (default 4 MiB, or SPARSE_CHUNK_SIZE), rounded to whole elements. A tensor
    /// coded against a parent keeps the parent's chunk size, so that chunks pair up.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=(256 << 20)))]
    pub chunk_size: Option<u64>,
    /// LOSSY: store the float matrices that have a tensor in the base as an approximation of
    /// their change: `int8` (a scale per 128 elements) or `lowrank` (truncated SVD, --rank).
    /// Vectors (biases, norms) and other dtypes stay lossless. Needs --base.
    #[arg(long, value_parser = ["int8", "lowrank"])]
    pub lossy: Option<String>,
    /// The rank of `--lossy lowrank` (default 16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), conflicts_with = "target_size")]
    pub rank: Option<u32>,
    /// With `--lossy lowrank`: a rank for each matrix, chosen so that the tensors take about this
    /// size (bytes, as 3000000, 20MB or 1.5GiB, or a share of their raw size, as 2%), instead of
    /// one rank for all.
    #[arg(long, value_parser = Target::parse)]
    pub target_size: Option<Target>,
    /// How files are taken. auto: Parquet and Arrow IPC tables (by extension or magic bytes)
    /// compared by row, CSV, TSV and JSON Lines checked for whole rows, text compared by record;
    /// table: every file must be a Parquet or Arrow table; text: records, no checks;
    /// bytes: plain bytes only.
    #[arg(long, value_enum, default_value_t)]
    pub kind: Kind,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let bar = progress::bytes("add", out.json);
    let mut opts = Options::from_env();
    opts.level = args.zstd_level.unwrap_or(opts.level);
    opts.chunk_size = args.chunk_size.unwrap_or(opts.chunk_size);
    opts.max_depth = args.max_depth.unwrap_or(opts.max_depth);
    opts.lossy = match (args.lossy.as_deref(), args.rank, args.target_size) {
        (Some("int8"), None, None) => Some(Tier::Int8),
        (Some("lowrank"), None, Some(target)) => Some(Tier::LowRankWithin { target }),
        (Some("lowrank"), rank, None) => Some(Tier::LowRank {
            rank: rank.unwrap_or(16),
        }),
        (None, None, None) => None,
        _ => return Err("--rank and --target-size go with --lossy lowrank".into()),
    };
    if opts.lossy.is_some() && args.base.is_none() {
        return Err("--lossy stores changes against a base: give --base REV".into());
    }
    opts.kind = args.kind;
    let report = repo.add(
        &args.source,
        &args.name,
        args.base.as_deref(),
        &opts,
        &progress::callback(&bar),
    )?;
    bar.finish_and_clear();
    out.emit(&report, |r| {
        let mut text = String::new();
        if let Some(c) = &r.base_choice {
            text.push_str(&choice_text(c, r.staged.raw_bytes));
        }
        if let Some(rb) = &r.rebased {
            text.push_str(&format!(
                "base {} already has a chain of {} bases (at most {} allowed): coded against {}\n",
                short(&rb.asked),
                rb.asked_depth,
                rb.max_depth,
                rb.used.as_deref().map_or("nothing (stored alone)".to_string(), |u| format!("its ancestor {}", short(u)))
            ));
        }
        let s = &r.staged;
        if !r.lossless.is_empty() {
            text.push_str(&format!(
                "--lossy applies to safetensors tensors: stored exactly: {}\n",
                r.lossless.join(", ")
            ));
        }
        if let Some(k) = &r.ranks {
            text.push_str(&format!(
                "ranks by matrix for {}: {} matrices, ranks {} to {} (sum {}); expected: factors {}, exact tensors {}\n",
                bytes(k.target),
                k.matrices,
                k.min,
                k.max,
                k.sum,
                bytes(k.factors),
                bytes(k.exact)
            ));
        }
        if let Some(tier) = &s.lossy {
            text.push_str(&format!(
                "LOSSY ({tier}): tensors changed from the base are stored approximately; checkout gives back an approximation, not these files\n"
            ));
        }
        let base = s.base.as_deref().map(|b| format!(" on base {}", short(b))).unwrap_or_default();
        text + &format!(
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

/// Why `--base auto` chose what it chose, one line per candidate.
fn choice_text(c: &Choice, raw: u64) -> String {
    let mut text = match &c.chosen {
        Some(b) => format!(
            "base auto: {} ({}): {}; a sample codes to {} of raw against it, {} alone\n",
            b.name,
            short(&b.commit),
            matched(b),
            ratio(b.estimated_bytes.unwrap_or(0), raw),
            ratio(c.alone_bytes, raw)
        ),
        None => format!(
            "base auto: none; no committed model makes it smaller than alone ({} of raw)\n",
            ratio(c.alone_bytes, raw)
        ),
    };
    for other in c
        .candidates
        .iter()
        .filter(|o| Some(&o.commit) != c.chosen.as_ref().map(|b| &b.commit))
    {
        let est = other
            .estimated_bytes
            .map_or("not sampled".to_string(), |b| format!("{} of raw", ratio(b, raw)));
        text.push_str(&format!(
            "  also considered {} ({}): {}, {est}\n",
            other.name,
            short(&other.commit),
            matched(other)
        ));
    }
    text
}

/// What a candidate base shares with the source: tensors by name, dtype and shape, and bytes of
/// plain files paired with its files (model/plain.rs).
fn matched(c: &Candidate) -> String {
    let tensors = format!(
        "{} of {} tensors match it by name, dtype and shape",
        c.matched_tensors, c.tensors
    );
    match c.paired_bytes {
        0 => tensors,
        n => format!("{tensors}; {} of other files pair with its files", bytes(n)),
    }
}
