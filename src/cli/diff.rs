use super::output::{short, Output};
use super::Error;
use crate::api::diff::{Change, Report, TensorDiff};
use crate::api::Repository;

/// Show what changed from one revision to another: files, and tensors paired by name with the
/// fraction of elements changed and the relative L2 norm of the change.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The revision to compare from (NAME, NAME~N, a tag, or a commit id prefix).
    pub rev_a: String,
    /// The revision to compare to.
    pub rev_b: String,
    /// List unchanged files and tensors too.
    #[arg(long)]
    pub all: bool,
    /// For changed text files (lines, CSV, TSV), also show the first N records added, removed
    /// and modified (their counts are always shown).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rows: usize,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.diff(&args.rev_a, &args.rev_b, args.all, args.rows)?;
    out.emit(&report, describe);
    Ok(0)
}

fn mark(change: Change) -> &'static str {
    match change {
        Change::Added => "+",
        Change::Removed => "-",
        Change::Changed => "~",
        Change::Unchanged => "=",
        Change::Retyped => "T",
        Change::Reshaped => "S",
    }
}

fn tensor_line(t: &TensorDiff) -> String {
    let side = t.b.as_ref().or(t.a.as_ref()).expect("a tensor is on one side at least");
    let what = match (t.change, &t.a, &t.b) {
        (Change::Retyped | Change::Reshaped, Some(a), Some(b)) => {
            format!("{} {:?} -> {} {:?}", a.dtype, a.shape, b.dtype, b.shape)
        }
        _ => format!("{} {:?}", side.dtype, side.shape),
    };
    let mut line = format!("  {} {:<52} {:<24}", mark(t.change), t.name, what);
    if let Some(f) = t.changed_fraction {
        line.push_str(&format!(" changed {:>7.3}%", f * 100.0));
    }
    match (t.relative_l2, t.l2) {
        (Some(r), _) => line.push_str(&format!("  rel L2 {r:.3e}")),
        (None, Some(l2)) => line.push_str(&format!("  L2 {l2:.3e} (base norm 0)")),
        _ => {}
    }
    line.trim_end().to_string() + "\n"
}

fn describe(r: &Report) -> String {
    let mut t = format!(
        "diff {} ({}) -> {} ({})\n",
        r.a.rev,
        short(&r.a.commit),
        r.b.rev,
        short(&r.b.commit)
    );
    if !r.files.is_empty() {
        t.push_str("\nfiles:\n");
        for f in &r.files {
            t.push_str(&format!("  {} {}\n", mark(f.change), f.path));
            if let Some(d) = &f.records {
                let unit = if d.columns_added.is_some() { "rows" } else { "records" };
                t.push_str(&format!(
                    "      {unit}: {} added, {} removed, {} modified, {} unchanged ({} -> {})\n",
                    d.added, d.removed, d.modified, d.unchanged, d.records_a, d.records_b
                ));
                for (what, cols) in [
                    ("added", &d.columns_added),
                    ("removed", &d.columns_removed),
                    ("retyped (not compared)", &d.columns_retyped),
                ] {
                    if let Some(cols) = cols.as_ref().filter(|c| !c.is_empty()) {
                        t.push_str(&format!("      columns {what}: {}\n", cols.join(", ")));
                    }
                }
                for (m, rows) in [
                    ("+", &d.examples.added),
                    ("-", &d.examples.removed),
                    ("~", &d.examples.modified),
                ] {
                    for row in rows {
                        t.push_str(&format!("      {m} {row}\n"));
                    }
                }
            }
        }
    }
    if !r.tensors.is_empty() {
        t.push_str("\ntensors:\n");
        for x in &r.tensors {
            t.push_str(&tensor_line(x));
        }
    }
    let (s, n) = (&r.summary.tensors, &r.summary.files);
    t.push_str(&format!(
        "\ntensors: {} changed, {} unchanged, {} added, {} removed, {} retyped, {} reshaped; \
         files: {} changed, {} unchanged, {} added, {} removed\n",
        s.changed, s.unchanged, s.added, s.removed, s.retyped, s.reshaped, n.changed, n.unchanged, n.added, n.removed
    ));
    if let Some(f) = r.summary.changed_fraction {
        t.push_str(&format!(
            "elements: {} of {} compared changed ({:.3}%)\n",
            r.summary.changed_elements,
            r.summary.elements,
            f * 100.0
        ));
    }
    t
}
