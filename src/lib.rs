//! sparse: a content-addressed, git-like store for machine-learning models, where every
//! fine-tune is a commit of lossless tensor deltas on top of its base.
//!
//! Layers run one way: `cli` -> [`api`] -> [`model`] -> [`codec`] (pure) -> [`store`].
//! docs/ARCHITECTURE.md walks through them; docs/FORMAT.md describes every byte on disk.

pub mod api;
pub mod cli;
pub mod codec;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod model;
pub mod store;
