use super::output::Output;
use super::{progress, Error};
use crate::api::Repository;

pub fn run(repo: &Repository, out: &Output) -> Result<i32, Error> {
    let bar = progress::bytes("fsck", out.json);
    let report = repo.fsck(&progress::callback(&bar))?;
    bar.finish_and_clear();
    out.emit(&report, |r| {
        let mut text: String = r.errors.iter().map(|e| format!("error: {e}\n")).collect();
        text.push_str(&format!(
            "{}: {} blobs re-hashed, {} snapshots checked, {} errors",
            if r.ok { "ok" } else { "FAILED" },
            r.objects,
            r.snapshots,
            r.errors.len()
        ));
        text
    });
    Ok(if report.ok { 0 } else { 1 })
}
