use std::path::PathBuf;

use super::output::{bytes, short, Output};
use super::{progress, Error};
use crate::api::Repository;
use crate::model::table::convert::Target;

/// Write the full model of a revision into a directory, every file byte-identical (Parquet and
/// Arrow tables stored as row deltas: table-identical, the same schema, values and row order);
/// or rebuild its tensors in GPU memory (`--device cuda`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NAME, NAME~N, a tag, or a commit id prefix.
    pub rev: String,
    /// The output directory (created; must be empty unless --force). Needed on the CPU; with
    /// --device cuda the files are written from the device's tensors.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write into a directory that is not empty, replacing files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Where to rebuild: `cpu`, or `cuda[:N]` (tensors rebuilt and checked in the memory of
    /// GPU N; needs a build with the `cuda` feature, a CUDA driver and NVRTC, else the CPU is used).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Write tables in this format: Parquet and Arrow tables as CSV or JSON Lines, CSV, TSV and
    /// JSON Lines as Parquet (their column types inferred by arrow over the whole file). The
    /// converted file takes the format's extension and replaces the original in the output.
    #[arg(long, value_enum)]
    pub format: Option<Target>,
}

/// Where a checkout runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    if let Device::Cuda(ordinal) = args.device {
        match on_device(repo, args, ordinal, out)? {
            Some(code) => return Ok(code),
            None => eprintln!("checking out on the CPU instead"),
        }
    }
    let Some(dir) = &args.output else {
        return Err("checkout on the CPU needs an output directory (-o DIR)".into());
    };
    let bar = progress::bytes("checkout", out.json);
    let report = repo.checkout(&args.rev, dir, args.force, args.format, &progress::callback(&bar))?;
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
        if let Some(t) = &r.lossy {
            text.push_str(&format!("\nLOSSY ({t}): the tensors are an approximation of what was added"));
        }
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

/// Checks out on GPU `ordinal`; None (after saying why) when there is no usable device.
#[cfg(feature = "cuda")]
fn on_device(repo: &Repository, args: &Args, ordinal: usize, out: &Output) -> Result<Option<i32>, Error> {
    let device = match crate::gpu::Device::open(ordinal) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot use cuda:{ordinal}: {e}");
            return Ok(None);
        }
    };
    let (_, report) = repo.checkout_device(&args.rev, &device, args.output.as_deref(), args.force)?;
    out.emit(&report, |r| {
        let s = &r.seconds;
        let place = match &r.dir {
            Some(d) => format!(", {} files written to {}", r.files, d.display()),
            None => String::new(),
        };
        let mut text = format!(
            "rebuilt {} ({}) on {}: {} tensors, {}, every chunk verified{place}\nrebuild {:.3} s (kernels {:.4} s), check {:.3} s",
            args.rev,
            short(&r.commit),
            r.device,
            r.tensors,
            bytes(r.bytes),
            s.rebuild,
            s.kernels,
            s.verify
        );
        if let Some(t) = &r.lossy {
            text.push_str(&format!("\nLOSSY ({t}): the tensors are an approximation of what was added"));
        }
        text
    });
    Ok(Some(0))
}

#[cfg(not(feature = "cuda"))]
fn on_device(_: &Repository, _: &Args, ordinal: usize, _: &Output) -> Result<Option<i32>, Error> {
    eprintln!("cannot use cuda:{ordinal}: this sparse was built without GPU support (cargo feature `cuda`)");
    Ok(None)
}
