use super::output::{bytes, ratio, short, Output};
use super::Error;
use crate::api::family::Member;
use crate::api::Repository;

/// Show the models as a tree of delta bases, with the raw size of each and what it costs in
/// the store (blobs no model above it uses).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the family of this model (the tree that holds it).
    pub name: Option<String>,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let report = repo.family(args.name.as_deref())?;
    out.emit(&report, |r| {
        let mut text = String::new();
        for root in &r.roots {
            lines(root, "", "", &mut text);
        }
        text.push_str(&format!(
            "total: raw {}, stored {} ({})",
            bytes(r.raw_bytes),
            bytes(r.stored_bytes),
            ratio(r.stored_bytes, r.raw_bytes)
        ));
        text
    });
    Ok(0)
}

fn lines(m: &Member, lead: &str, rest: &str, text: &mut String) {
    let label = match m.names.is_empty() {
        true => format!("({})", short(&m.commit)),
        false => format!("{} ({})", m.names.join(", "), short(&m.commit)),
    };
    text.push_str(&format!(
        "{lead}{label}  raw {}, stored {} ({})\n",
        bytes(m.raw_bytes),
        bytes(m.stored_bytes),
        ratio(m.stored_bytes, m.raw_bytes)
    ));
    for (i, child) in m.children.iter().enumerate() {
        let last = i + 1 == m.children.len();
        let (l, r) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
        lines(child, &format!("{rest}{l}"), &format!("{rest}{r}"), text);
    }
}
