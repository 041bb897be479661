use super::output::{short, Output};
use super::Error;
use crate::api::refs::{RefKind, RefRow};
use crate::api::Repository;

/// Arguments of `branch` and `tag`: nothing lists, NAME REV creates, -d NAME deletes.
#[derive(Debug, clap::Args)]
pub struct RefArgs {
    /// The name to create or delete.
    pub name: Option<String>,
    /// The revision the new name points at.
    pub rev: Option<String>,
    /// Delete the name (what only it reached is freed by gc).
    #[arg(short, long)]
    pub delete: bool,
}

pub fn branch(repo: &Repository, a: &RefArgs, out: &Output) -> Result<i32, Error> {
    edit(
        repo,
        RefKind::Branch,
        a.name.as_deref(),
        a.rev.as_deref(),
        a.delete,
        out,
    )
}

pub fn tag(repo: &Repository, a: &RefArgs, out: &Output) -> Result<i32, Error> {
    edit(repo, RefKind::Tag, a.name.as_deref(), a.rev.as_deref(), a.delete, out)
}

fn edit(
    repo: &Repository,
    kind: RefKind,
    name: Option<&str>,
    rev: Option<&str>,
    delete: bool,
    out: &Output,
) -> Result<i32, Error> {
    match (name, rev, delete) {
        (None, None, false) => {
            let rows = repo.list_refs(kind)?;
            out.emit(&serde_json::json!({ "refs": rows }), |_| list(&rows));
        }
        (Some(name), None, true) => {
            let row = repo.delete_ref(kind, name)?;
            out.emit(&row, |r| format!("deleted {} (was {})", r.name, short(&r.commit)));
        }
        (Some(name), Some(rev), false) => {
            let row = repo.create_ref(kind, name, rev)?;
            out.emit(&row, |r| format!("created {} at {}", r.name, short(&r.commit)));
        }
        _ => return Err("usage: NAME REV to create, -d NAME to delete, nothing to list".into()),
    }
    Ok(0)
}

fn list(rows: &[RefRow]) -> String {
    rows.iter()
        .map(|r| format!("{:<32} {}\n", r.name, short(&r.commit)))
        .collect()
}
