use serde::Serialize;

use super::output::Output;
use super::{progress, Error};
use crate::api::{fsck, reindex, Repository};

/// Re-hash every blob and check every reference of every snapshot.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First replace the index (sparse/index.redb) with one rebuilt from the blobs and
    /// manifests, keeping the staged names whose records can still be read.
    #[arg(long)]
    pub rebuild_index: bool,
}

#[derive(Serialize)]
struct Checked {
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuilt_index: Option<reindex::Report>,
    #[serde(flatten)]
    fsck: fsck::Report,
}

pub fn run(repo: &Repository, args: &Args, out: &Output) -> Result<i32, Error> {
    let rebuilt_index = args.rebuild_index.then(|| repo.rebuild_index()).transpose()?;
    let bar = progress::bytes("fsck", out.json);
    let fsck = repo.fsck(&progress::callback(&bar))?;
    bar.finish_and_clear();
    let ok = fsck.ok;
    out.emit(&Checked { rebuilt_index, fsck }, |c| {
        let mut text = c.rebuilt_index.as_ref().map(rebuilt).unwrap_or_default();
        let r = &c.fsck;
        text.extend(r.errors.iter().map(|e| format!("error: {e}\n")));
        text.push_str(&format!(
            "{}: {} blobs re-hashed, {} snapshots checked, {} errors",
            if r.ok { "ok" } else { "FAILED" },
            r.objects,
            r.snapshots,
            r.errors.len()
        ));
        text
    });
    Ok(if ok { 0 } else { 1 })
}

fn rebuilt(r: &reindex::Report) -> String {
    let mut text = format!(
        "rebuilt the index: {} blobs, {} chunks stored whole, {} staged names kept\n",
        r.blobs,
        r.full,
        r.staged.len()
    );
    if let Some(why) = &r.unreadable {
        text.push_str(&format!(
            "the old index's staged names could not be read ({why}): add them again\n"
        ));
    }
    if !r.lost.is_empty() {
        text.push_str(&format!("staged names lost, add them again: {}\n", r.lost.join(", ")));
    }
    if r.missing > 0 {
        text.push_str(&format!("{} blobs that snapshots use are missing\n", r.missing));
    }
    text
}
