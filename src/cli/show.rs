use super::output::{bytes, ratio, Output};
use super::Error;
use crate::api::Repository;

/// Show a revision: its commit, files, and tensors with codec, raw and stored size.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub rev: String,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let show = repo.show(&args.rev)?;
    out.emit(&show, |s| {
        let mut t = super::log::describe(&s.entry);
        t.push_str("\nfiles:\n");
        for f in &s.files {
            t.push_str(&format!(
                "  {:<40} {:>11} {:>11} {:>6}  {}\n",
                f.path,
                bytes(f.size),
                bytes(f.stored_bytes),
                ratio(f.stored_bytes, f.size),
                f.kind
            ));
        }
        if !s.tensors.is_empty() {
            t.push_str(&format!("\ntensors ({}):\n", s.tensors.len()));
            for x in &s.tensors {
                t.push_str(&format!(
                    "  {:<52} {:<5} {:<16} {:<5} {:>11} {:>11} {:>6}\n",
                    x.name,
                    x.dtype,
                    format!("{:?}", x.shape),
                    x.codec,
                    bytes(x.raw_bytes),
                    bytes(x.stored_bytes),
                    ratio(x.stored_bytes, x.raw_bytes)
                ));
            }
        }
        t
    });
    Ok(0)
}
