use super::output::{bytes, short, Output};
use super::Error;
use crate::api::Repository;

pub fn run(repo: &Repository, out: &Output) -> Result<i32, Error> {
    let report = repo.status()?;
    out.emit(&report, |r| {
        let mut t = format!("store {}\n", r.store.display());
        if r.staged.is_empty() {
            t.push_str("nothing staged\n");
        } else {
            t.push_str("staged (use `sparse commit -m MSG`):\n");
            for s in &r.staged {
                t.push_str(&format!(
                    "  {:<24} {} from {} ({} raw)\n",
                    s.name,
                    short(&s.tree),
                    s.source,
                    bytes(s.raw_bytes)
                ));
            }
        }
        for n in &r.names {
            t.push_str(&format!("  {:<24} {}\n", n.name, short(&n.commit)));
        }
        t
    });
    Ok(0)
}
