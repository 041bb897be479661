//! Models: safetensors and GGUF files and the other files of a model directory, turned into snapshot
//! manifests ([`encode`]) and back into files ([`rebuild`]).

pub mod bert;
pub mod budget;
#[cfg(feature = "cuda")]
pub mod device;
pub mod encode;
pub mod gguf;
pub mod manifest;
pub mod plain;
pub mod rebuild;
pub mod records;
pub mod safetensors;
pub mod sample;
pub mod snapshot;
pub mod source;
pub mod table;

/// Tunable sizes. Tests shrink them to reach edge cases (many chunks, tiny files) with tiny inputs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes per chunk (rounded down to whole elements).
    pub chunk_size: u64,
    /// zstd level for byte planes.
    pub level: i32,
    /// Files smaller than this (other than safetensors and GGUF) are kept verbatim in git.
    pub small_file: u64,
    /// Longest chain of delta bases a new snapshot may have; past it, `add` codes against the
    /// nearest ancestor of the base that keeps the chain within it (0: no deltas).
    pub max_depth: usize,
    /// Store float matrices that have a parent lossy, in this tier (never from the environment).
    pub lossy: Option<crate::codec::lossy::Tier>,
    /// The rank of each matrix under `lossy` `LowRankWithin`, as [`budget::ranks`] chose them.
    pub ranks: Option<std::sync::Arc<budget::Ranks>>,
    /// How files are taken: tables, text records or bytes (`--kind`).
    pub kind: table::check::Kind,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: 4 << 20,
            level: 1,
            small_file: 1 << 20,
            max_depth: 4,
            lossy: None,
            ranks: None,
            kind: table::check::Kind::Auto,
        }
    }
}

impl Options {
    /// Defaults, overridden by `SPARSE_CHUNK_SIZE`, `SPARSE_ZSTD_LEVEL`, `SPARSE_SMALL_FILE`
    /// and `SPARSE_MAX_DEPTH`.
    pub fn from_env() -> Self {
        let mut o = Options::default();
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<i64>().ok());
        if let Some(v) = var("SPARSE_CHUNK_SIZE").filter(|&v| v >= 8) {
            o.chunk_size = v as u64;
        }
        if let Some(v) = var("SPARSE_ZSTD_LEVEL").filter(|v| (1..=22).contains(v)) {
            o.level = v as i32;
        }
        if let Some(v) = var("SPARSE_SMALL_FILE").filter(|&v| v >= 0) {
            o.small_file = v as u64;
        }
        if let Some(v) = var("SPARSE_MAX_DEPTH").filter(|&v| v >= 0) {
            o.max_depth = v as usize;
        }
        o
    }
}
