//! Slots of grouped chunks, kept for a parent that stays on the device.
//!
//! Before `apply` can take a grouped chunk's differences back out of key order, `ctx_count`
//! counts the parent chunk's keys in every tile and `ctx_scan` turns the counts into each
//! (tile, key)'s first slot. Those slots depend on the parent's elements, the context bits and
//! the tile size only, not on the chunk being applied: for a resident base they are the same
//! at every swap, whichever fine-tune is swapped in. [`Slots`] keeps them in device memory, so
//! that a batch counts and scans only the chunks whose slots it has not seen.
//!
//! Slots are right only while the parent bytes they were counted from are unchanged: whoever
//! holds a `Slots` keeps it beside those buffers, and drops it with them.

use std::collections::HashMap;

use super::device::Buffer;

/// What a grouped chunk's slots depend on: where its parent lies, and how it is tiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub parent: u64,
    pub elements: u64,
    pub width: usize,
    pub bits: u8,
    pub tile: u64,
}

/// Scanned counts of grouped chunks, by parent chunk, kept within a budget of device bytes.
pub struct Slots {
    /// The device memory the slots lie in: one buffer per batch that counted new ones.
    buffers: Vec<Buffer>,
    at: HashMap<Key, u64>,
    bytes: u64,
    budget: u64,
}

impl Slots {
    /// Keeps at most `budget` bytes of slots (0: none, every batch counts its own).
    pub fn new(budget: u64) -> Slots {
        Slots {
            buffers: Vec::new(),
            at: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Device bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Jobs (blocks of chunks) whose slots are kept.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Forgets every slot (after a failed batch, whose counting may not have run).
    pub fn clear(&mut self) {
        self.at.clear();
        self.buffers.clear();
        self.bytes = 0;
    }

    /// Slots at `entries`, with no device memory behind them: for tests of the planning.
    #[cfg(test)]
    pub(super) fn pretend(budget: u64, bytes: u64, entries: &[(Key, u64)]) -> Slots {
        Slots {
            buffers: Vec::new(),
            at: entries.iter().copied().collect(),
            bytes,
            budget,
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<u64> {
        self.at.get(key).copied()
    }

    /// Whether `bytes` more fit in the budget.
    pub(super) fn fits(&self, bytes: u64) -> bool {
        self.bytes.saturating_add(bytes) <= self.budget
    }

    /// Takes `buffer` as the home of the slots at `keys` (device addresses inside it).
    pub(super) fn keep(&mut self, buffer: Buffer, keys: impl IntoIterator<Item = (Key, u64)>) {
        self.bytes += buffer.len() as u64;
        self.buffers.push(buffer);
        self.at.extend(keys);
    }
}
