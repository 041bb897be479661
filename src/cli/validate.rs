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
    /// Also run the model (BERT; config.json and tokenizer.json beside the source's weights) on
    /// the sentences of these text files, and compare its sentence embeddings with the source's.
    #[arg(long, value_name = "FILE")]
    pub sentences: Vec<std::path::PathBuf>,
    /// Run the model on at most this many of those sentences.
    #[arg(long, default_value_t = 200)]
    pub max_sentences: usize,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let mut report = repo.validate(&args.rev, &args.against)?;
    if !args.sentences.is_empty() {
        let mut sentences = Vec::new();
        for path in &args.sentences {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            sentences.extend(crate::model::bert::sentences(&text));
        }
        let mut seen = std::collections::HashSet::new();
        sentences.retain(|s| seen.insert(s.clone()));
        sentences.truncate(args.max_sentences);
        if sentences.is_empty() {
            let files: Vec<String> = args.sentences.iter().map(|p| p.display().to_string()).collect();
            return Err(crate::api::validate::Error::NoSentences {
                files: files.join(", "),
            }
            .into());
        }
        report.model = Some(repo.validate_model(&args.rev, &args.against, &sentences)?);
    }
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
        if let Some(m) = &r.model {
            t.push_str(&format!(
                "model {} run on {} sentences, cosine similarity of the mean-pooled embeddings to the source's:\n  \
                 {}: mean {:.6}, min {:.6}\n",
                m.file, m.sentences, args.rev, m.revision.mean, m.revision.min
            ));
            if let (Some(b), Some(c)) = (&m.base, &m.base_commit) {
                t.push_str(&format!(
                    "  its base {}: mean {:.6}, min {:.6} (what the fine-tune changed)\n",
                    short(c),
                    b.mean,
                    b.min
                ));
            }
        }
        t.trim_end().to_string()
    });
    Ok(0)
}
