use super::output::{short, Output};
use super::Error;
use crate::api::Repository;

/// Compare a revision's float tensors with a source's, tensor by tensor: max and mean absolute
/// error and relative Frobenius error (what a lossy tier cost).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The revision to check.
    pub rev: String,
    /// What it should be close to: a model directory, a .safetensors file, or hf:ORG/NAME.
    #[arg(long)]
    pub against: String,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.validate(&args.rev, &args.against)?;
    out.emit(&report, |r| {
        let mut t = format!(
            "{} ({}){} against {}: {} tensors compared, {} bit-identical, relative Frobenius error {:.3e}\n",
            args.rev,
            short(&r.commit),
            r.lossy.as_deref().map(|l| format!(", LOSSY ({l})")).unwrap_or_default(),
            args.against,
            r.tensors.len(),
            r.exact,
            r.rel_frobenius
        );
        t.push_str(&format!(
            "  {:<52} {:<8} {:>10} {:>10} {:>10}\n",
            "tensor", "codec", "max abs", "mean abs", "rel frob"
        ));
        for x in &r.tensors {
            t.push_str(&format!(
                "  {:<52} {:<8} {:>10.3e} {:>10.3e} {:>10.3e}\n",
                x.name, x.codec, x.max_abs, x.mean_abs, x.rel_frobenius
            ));
        }
        for name in &r.unmatched {
            t.push_str(&format!("  {name}: not in the revision with this dtype and shape\n"));
        }
        t.trim_end().to_string()
    });
    Ok(0)
}
