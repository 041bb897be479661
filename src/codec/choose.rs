//! Choosing the smallest lossless coding of a chunk.

use super::{chunk, Codec};

/// A chunk as it will be stored: its codec and, unless it is [`Codec::Same`], the coded bytes.
#[derive(Debug)]
pub struct Encoded {
    pub codec: Codec,
    pub bytes: Option<Vec<u8>>,
}

/// Codes `data` as `same` when it equals `parent`; else as `sub`, and, only when that leaves
/// more than [`GOOD_DELTA`] of the raw size, also as `xor` and `full`, keeping the smallest.
/// On the real MiniLM pair `sub` won every tensor, so the common case codes each chunk once;
/// a tensor that barely resembles its parent still never costs more than on its own.
pub fn encode_best(data: &[u8], parent: Option<&[u8]>, width: usize, level: i32) -> Encoded {
    let parent = parent.filter(|p| p.len() == data.len());
    let Some(p) = parent else {
        return Encoded {
            codec: Codec::Full,
            bytes: Some(chunk::encode(Codec::Full, data, None, width, level)),
        };
    };
    if p == data {
        return Encoded {
            codec: Codec::Same,
            bytes: None,
        };
    }
    let sub = chunk::encode(Codec::Sub, data, parent, width, level);
    if (sub.len() as f64) <= GOOD_DELTA * data.len() as f64 {
        return Encoded {
            codec: Codec::Sub,
            bytes: Some(sub),
        };
    }
    let (codec, bytes) = [Codec::Xor, Codec::Full]
        .into_iter()
        .map(|c| (c, chunk::encode(c, data, parent, width, level)))
        .chain(std::iter::once((Codec::Sub, sub)))
        .min_by_key(|(_, bytes)| bytes.len())
        .expect("three candidates");
    Encoded {
        codec,
        bytes: Some(bytes),
    }
}

/// A `sub` delta at most this fraction of the raw size is kept without trying the others.
pub const GOOD_DELTA: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_chunks_store_nothing_and_unrelated_ones_fall_back_to_full() {
        let data: Vec<u8> = (0..4096u32)
            .flat_map(|i| ((i as f32).sin() * 0.02).to_le_bytes())
            .collect();
        assert_eq!(encode_best(&data, Some(&data), 4, 3).codec, Codec::Same);
        assert_eq!(encode_best(&data, None, 4, 3).codec, Codec::Full);
        let nudged: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|b| (u32::from_le_bytes(b.try_into().unwrap()) + 1).to_le_bytes())
            .collect();
        assert_eq!(encode_best(&nudged, Some(&data), 4, 3).codec, Codec::Sub);
        // A parent of the same length but unrelated content: the delta cannot beat `full` by much.
        let unrelated: Vec<u8> = (0..data.len()).map(|i| (i * 7919 % 251) as u8).collect();
        let chosen = encode_best(&data, Some(&unrelated), 4, 3);
        let full = chunk::encode(Codec::Full, &data, None, 4, 3);
        assert!(chosen.bytes.unwrap().len() <= full.len());
    }
}
