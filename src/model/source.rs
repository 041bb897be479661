//! Where a model comes from: a directory (Hugging Face layout), a single file, or
//! `hf:ORG/NAME[@REVISION]` in the local Hugging Face cache. No network is ever used.

use std::path::{Path, PathBuf};

/// One file of a source, with its path inside the model (always `/`-separated).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub abs: PathBuf,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot read source {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("source {0} holds no files")]
    Empty(PathBuf),
    #[error("{path}: file name is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("model {spec} is not in the local Hugging Face cache (looked in {cache})")]
    NotCached { spec: String, cache: PathBuf },
    #[error("{spec}: revision {revision} is not in the local Hugging Face cache ({dir})")]
    NoRevision {
        spec: String,
        revision: String,
        dir: PathBuf,
    },
    #[error("{path}: the name {name:?} is reserved for the snapshot record")]
    Reserved { path: PathBuf, name: String },
}

/// Lists the files of `spec`, sorted by path.
pub fn resolve(spec: &str) -> Result<Vec<SourceFile>, Error> {
    let root = match spec.strip_prefix("hf:") {
        Some(repo) => hf_snapshot(spec, repo)?,
        None => PathBuf::from(spec),
    };
    let meta = std::fs::metadata(&root).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::Missing(root.clone()),
        _ => Error::Io {
            path: root.clone(),
            source,
        },
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(&root, "", &mut files)?;
    } else {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::NotUtf8 { path: root.clone() })?;
        files.push(SourceFile {
            path: name.to_string(),
            abs: root.clone(),
            size: meta.len(),
        });
    }
    if files.is_empty() {
        return Err(Error::Empty(root));
    }
    if let Some(f) = files.iter().find(|f| f.path == super::manifest::META_PATH) {
        return Err(Error::Reserved {
            path: f.abs.clone(),
            name: f.path.clone(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Directories never taken from a source: version control and tool caches.
const SKIPPED_DIRS: &[&str] = &[".git", ".sparse", ".cache", ".hg"];

fn walk(dir: &Path, prefix: &str, out: &mut Vec<SourceFile>) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let abs = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Error::NotUtf8 { path: abs.clone() })?;
        // Follow symlinks: the Hugging Face cache links snapshot files to its blobs.
        let meta = std::fs::metadata(&abs).map_err(io(&abs))?;
        let path = format!("{prefix}{name}");
        if meta.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                walk(&abs, &format!("{path}/"), out)?;
            }
        } else if meta.is_file() {
            out.push(SourceFile {
                path,
                abs,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// The snapshot directory of `repo` (`ORG/NAME[@REVISION]`) in the Hugging Face hub cache.
fn hf_snapshot(spec: &str, repo: &str) -> Result<PathBuf, Error> {
    let (name, revision) = match repo.split_once('@') {
        Some((n, r)) => (n, r.to_string()),
        None => (repo, "main".to_string()),
    };
    let cache = hf_cache_dir();
    let dir = cache.join(format!("models--{}", name.replace('/', "--")));
    if !dir.is_dir() {
        return Err(Error::NotCached {
            spec: spec.to_string(),
            cache,
        });
    }
    // A branch or tag name maps to a commit through refs/; a commit hash names the snapshot directly.
    let commit = std::fs::read_to_string(dir.join("refs").join(&revision))
        .map(|s| s.trim().to_string())
        .unwrap_or(revision.clone());
    let snapshot = dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(Error::NoRevision {
            spec: spec.to_string(),
            revision,
            dir,
        });
    }
    Ok(snapshot)
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, as huggingface_hub does.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}
