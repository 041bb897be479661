use std::path::{Path, PathBuf};

use super::output::Output;
use super::Error;
use crate::api::Repository;

/// Create an empty store (DIR/.sparse).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the store (default: the current directory).
    pub dir: Option<PathBuf>,
}

pub fn run(start: &Path, args: &Args, out: &Output) -> Result<i32, Error> {
    let dir = match &args.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => start.join(d),
        None => start.to_owned(),
    };
    let repo = Repository::init(&dir)?;
    let store = std::path::absolute(&repo.layout.root).unwrap_or(repo.layout.root.clone());
    out.emit(&serde_json::json!({ "store": store }), |_| {
        format!("Initialized empty sparse store in {}", store.display())
    });
    Ok(0)
}
