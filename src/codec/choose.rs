//! Choosing the smallest lossless coding of a chunk.

use super::{chunk, Codec};

/// A chunk as it will be stored: its codec and, unless it is [`Codec::Same`], the coded bytes.
#[derive(Debug)]
pub struct Encoded {
    pub codec: Codec,
    pub bytes: Option<Vec<u8>>,
}

/// Codes `data` in every way that applies and keeps the smallest: `same` when it equals
/// `parent`, else the smallest of `sub`, `xor` and `full`.
pub fn encode_best(data: &[u8], parent: Option<&[u8]>, width: usize, level: i32) -> Encoded {
    let parent = parent.filter(|p| p.len() == data.len());
    if parent == Some(data) {
        return Encoded {
            codec: Codec::Same,
            bytes: None,
        };
    }
    let candidates: &[Codec] = match parent {
        Some(_) => &[Codec::Sub, Codec::Xor, Codec::Full],
        None => &[Codec::Full],
    };
    let (codec, bytes) = candidates
        .iter()
        .map(|&c| (c, chunk::encode(c, data, parent, width, level)))
        .min_by_key(|(_, bytes)| bytes.len())
        .expect("at least one candidate");
    Encoded {
        codec,
        bytes: Some(bytes),
    }
}
