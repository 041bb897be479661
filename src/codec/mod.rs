//! Lossless coding of tensor chunks: pure functions from bytes to bytes, no I/O.
//!
//! A chunk is a run of whole elements of one tensor (or of a plain file, with width 1).
//! It is coded relative to the same chunk of its delta parent where that is smaller:
//! [`Codec::Same`] stores nothing, [`Codec::Xor`], [`Codec::Sub`] and [`Codec::SubCtx`] store a
//! difference, [`Codec::Full`] the chunk's own bytes. Every stored form is split into byte planes
//! ([`planes`]) and each plane is rANS- or zstd-coded or kept raw ([`entropy`], [`rans`]); the wire
//! layout of one coded chunk is in [`chunk`] and docs/FORMAT.md.

pub mod choose;
pub mod chunk;
pub mod context;
pub mod delta;
pub mod entropy;
pub mod layout;
pub mod lossy;
pub mod planes;
pub mod rans;
pub mod rows;

pub use choose::{encode_best, Encoded};
pub use chunk::{decode, encode, Transform};

use serde::{Deserialize, Serialize};

/// How one chunk is stored relative to its delta parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Bit-identical to the parent's chunk: no bytes stored.
    Same,
    /// The chunk's own bytes.
    Full,
    /// Bitwise XOR with the parent's chunk.
    Xor,
    /// Integer difference of the bit patterns (element-wise, wrapping, zigzag-coded).
    Sub,
    /// `Sub`, with the differences grouped by context bits of the parent's elements
    /// ([`context`]) before the byte planes.
    #[serde(rename = "subctx")]
    SubCtx,
    /// Lossy: the delta as int8 multiples of a scale per group of elements ([`lossy`]).
    Int8,
    /// Lossy: the delta of the whole tensor as a low-rank product ([`lossy`]).
    #[serde(rename = "lowrank")]
    LowRank,
}

impl Codec {
    /// Whether decoding needs the parent's chunk.
    pub fn needs_parent(self) -> bool {
        !matches!(self, Codec::Full)
    }

    /// Whether decoding gives an approximation of what was added.
    pub fn is_lossy(self) -> bool {
        matches!(self, Codec::Int8 | Codec::LowRank)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Same => "same",
            Codec::Full => "full",
            Codec::Xor => "xor",
            Codec::Sub => "sub",
            Codec::SubCtx => "subctx",
            Codec::Int8 => "int8",
            Codec::LowRank => "lowrank",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a coded chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("coded chunk is truncated")]
    Truncated,
    #[error("coded chunk has unknown format version {0}")]
    Version(u8),
    #[error("coded chunk has unknown transform {0}")]
    Transform(u8),
    #[error("coded chunk has element width {width}, expected {expected}")]
    Width { width: usize, expected: usize },
    #[error("coded chunk holds {found} bytes, expected {expected}")]
    Length { found: u64, expected: usize },
    #[error("coded chunk has unknown plane mode {0}")]
    PlaneMode(u8),
    #[error("coded chunk needs its parent's bytes, none were given")]
    MissingParent,
    #[error("plane does not decompress to its declared size: {0}")]
    Zstd(String),
    #[error("rANS plane is corrupt: {0}")]
    Rans(&'static str),
    #[error("coded chunk has {0} trailing bytes")]
    Trailing(usize),
    #[error("coded chunk has more than {0} blocks")]
    Blocks(usize),
    #[error("lossy chunk: {0}")]
    Lossy(&'static str),
}

/// Seeded pseudo-random numbers for the codec's tests: a 64-bit LCG's high 32 bits.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 32) as u32
    }
}
