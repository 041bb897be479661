//! Choosing the smallest lossless coding of a chunk.

use super::{chunk, Codec, Transform};

/// A chunk as it will be stored: its codec and, unless it is [`Codec::Same`], the coded bytes.
#[derive(Debug)]
pub struct Encoded {
    pub codec: Codec,
    pub bytes: Option<Vec<u8>>,
}

/// Codes `data` as `same` when it equals `parent`. Otherwise it is coded as plain differences
/// (`sub`) and, for elements of 2, 4 or 8 bytes, as bitwise differences (`xor`) and as
/// differences grouped by each context size of [`context_bits`], and the smallest is kept; a
/// grouping must be smaller than `sub` by more than 1/[`GROUPING_MARGIN`] of its own size, since
/// `sub` decodes without the ungrouping's counting sort. Only when that leaves more than
/// [`GOOD_DELTA`] of the raw size is `full` tried too (and `xor`, for other widths), so a tensor
/// that barely resembles its parent never costs more than on its own.
///
/// `xor` is a first candidate since weights that moved far (the real Tesseract fine-tunes, whose
/// float64 weights moved by a median 2^48 units) lose the sign and exponent bytes' runs of zeros
/// to the borrows of `sub`: there it took the stored fine-tune from 0.283 to 0.270 of raw, while
/// on the real MiniLM pair it changed nothing but `add`'s trials (fp32 +4% CPU, bf16 within the
/// noise; docs/PERFORMANCE.md).
///
/// Grouping pays where how far a weight moved depends on its base value, as in the real MiniLM
/// fine-tune; where a fine-tune changed weights in a way unrelated to it (most of the generated
/// 7B-shaped family, the embedding matrix of the real pair in bf16) plain differences are as
/// small, and a checkout skips the ungrouping: with `sub` among the candidates, checkout of the
/// generated family took half the CPU and of the bf16 pair 14% less, the stored sizes
/// unchanged within 0.1% (docs/PERFORMANCE.md).
///
/// A chunk of at least four samples ([`sample_len`]) is coded once: its first sample, coded
/// with each candidate, chooses the transform and each plane's entropy coder
/// ([`chunk::encode_as`]), so for such a chunk the promise above holds for its start, not
/// always for the whole (a chunk whose start resembles its parent and whose rest does not may
/// cost a little more than `full`; it is still lossless). On the real MiniLM pair the fallback
/// candidates never won, and coding whole chunks with them had made `add` take twice as long.
pub fn encode_best(data: &[u8], parent: Option<&[u8]>, width: usize, level: i32) -> Encoded {
    let parent = parent.filter(|p| p.len() == data.len());
    let Some(p) = parent else {
        let bytes = chunk::encode(Transform::Full, data, None, width, level);
        return Encoded {
            codec: Codec::Full,
            bytes: Some(bytes),
        };
    };
    if p == data {
        return Encoded {
            codec: Codec::Same,
            bytes: None,
        };
    }
    let candidates: Vec<Transform> = match width {
        2 | 4 | 8 => [Transform::Sub, Transform::Xor]
            .into_iter()
            .chain(context_bits(width).iter().map(|&bits| Transform::SubCtx { bits }))
            .collect(),
        _ => vec![Transform::Sub],
    };
    let fallback: &[Transform] = match width {
        2 | 4 | 8 => &[Transform::Full],
        _ => &[Transform::Xor, Transform::Full],
    };
    let n = sample_len(width);
    let (t, bytes) = if data.len() >= n * 4 {
        let sample = |t: Transform| (t, chunk::encode(t, &data[..n], Some(&p[..n]), width, level));
        let mut best = smallest(candidates.iter().map(|&t| sample(t)), Vec::len);
        if best.1.len() as f64 > GOOD_DELTA * n as f64 {
            let other = smallest(fallback.iter().map(|&t| sample(t)), Vec::len);
            if other.1.len() < best.1.len() {
                best = other;
            }
        }
        // The sample's entropy coders code the chunk's planes too.
        let bytes = match chunk::plane_modes(&best.1, width) {
            Some(hints) => chunk::encode_as(best.0, data, parent, width, level, &hints),
            None => chunk::encode(best.0, data, parent, width, level),
        };
        (best.0, bytes)
    } else {
        let coded = |t: Transform| (t, chunk::encode(t, data, parent, width, level));
        let (mut t, mut bytes) = smallest(candidates.iter().map(|&t| coded(t)), Vec::len);
        if bytes.len() as f64 > GOOD_DELTA * data.len() as f64 {
            let (t2, bytes2) = smallest(fallback.iter().map(|&t| coded(t)), Vec::len);
            if bytes2.len() < bytes.len() {
                (t, bytes) = (t2, bytes2);
            }
        }
        (t, bytes)
    };
    Encoded {
        codec: t.codec(),
        bytes: Some(bytes),
    }
}

/// The candidate to keep of `coded` (transforms with what they coded to, `len` the size of
/// that): the first smallest, where a grouping counts 1/[`GROUPING_MARGIN`] more than its
/// size, so that it wins over `sub` only by saving more than that.
fn smallest<C>(coded: impl Iterator<Item = (Transform, C)>, len: impl Fn(&C) -> usize) -> (Transform, C) {
    let cost = |(t, c): &(Transform, C)| {
        let n = len(c);
        match t {
            Transform::SubCtx { .. } => n.saturating_add(n / GROUPING_MARGIN),
            _ => n,
        }
    };
    coded.min_by_key(cost).expect("at least one candidate")
}

/// A grouping costs a checkout the ungrouping's counting sort, the largest part of decoding
/// where it is used; it is kept only where it is smaller than plain differences by more than
/// 1/`GROUPING_MARGIN` of its own size. On the generated 7B-shaped family (noise independent
/// of the base value) groupings had won 60% of the chunks by a few bytes each, at no saving.
pub const GROUPING_MARGIN: usize = 64;

/// The context sizes for float-sized elements ([`context_bits`] says which a width tries): the
/// exponent of a bf16 or fp32 value (8 bits after the sign), and that plus three leading
/// mantissa bits. On the real MiniLM pair (benches/model/context_bits.py) 8 bits won for bf16 (0.170 of raw, against 0.188 ungrouped)
/// and 11 for fp32 (0.344, against 0.401); 6, 10, 12 and 14 bits were each worse than one of these.
pub const CONTEXT_BITS: [u8; 2] = [8, 11];

/// The context sizes tried for elements of `width` bytes: for 2-byte elements only the 8 bits
/// (a bf16 value's exponent, an f16 value's with three mantissa bits). Eleven bits cut a 1 MiB
/// block of 2-byte elements into 2^11 buckets of 256 elements on average, thin for the
/// differences to repeat in; the model had 8 bits ahead on bf16 (0.170 against 0.173), and in
/// the store the real bf16 pair grew by 0.5% (0.1566 to 0.1574 of raw) without the 11-bit
/// trial while its coding took 12% less time (docs/PERFORMANCE.md). Wider elements try both.
pub fn context_bits(width: usize) -> &'static [u8] {
    match width {
        2 => &CONTEXT_BITS[..1],
        _ => &CONTEXT_BITS,
    }
}

/// Elements of a chunk's start that choose the transform and entropy coders of a chunk at
/// least four times as large. A count of elements, not bytes, since what a grouping can show
/// depends on how many elements fall in each of its buckets: 2^11 buckets need about 32K fp32
/// elements for the real pair's choices to come out as on whole chunks (a sample of 16K made
/// the fp32 pair 3% larger), and a bf16 chunk's sample of as many elements (64 KiB instead of
/// 128) changed its stored size by 0.05% and took a quarter off the coding
/// (docs/PERFORMANCE.md).
pub const SAMPLE_ELEMENTS: usize = 32 << 10;

/// Bytes a sample of the chunk's start never goes below: elements of one byte (fp8, int8,
/// bool, plain bytes) are never grouped, and their planes' coders are chosen on as many bytes
/// as a bf16 sample's planes.
pub const SAMPLE_MIN: usize = 64 << 10;

/// Bytes of the sample that chooses how a chunk of `width`-byte elements is coded.
pub fn sample_len(width: usize) -> usize {
    (SAMPLE_ELEMENTS * width).max(SAMPLE_MIN / width * width)
}

/// A delta at most this fraction of the raw size is kept without trying the others.
pub const GOOD_DELTA: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;

    /// fp32 elements each moved by a few units of their bit pattern, as many as the exponent
    /// of the element modulo 7.
    fn by_exponent(data: &[u8]) -> Vec<u8> {
        data.chunks_exact(4)
            .flat_map(|b| {
                let v = u32::from_le_bytes(b.try_into().unwrap());
                (v + (v >> 23 & 0xFF) % 7).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn identical_chunks_store_nothing_and_unrelated_ones_fall_back_to_full() {
        let data: Vec<u8> = (0..4096u32)
            .flat_map(|i| ((i as f32).sin() * 0.02).to_le_bytes())
            .collect();
        assert_eq!(encode_best(&data, Some(&data), 4, 3).codec, Codec::Same);
        assert_eq!(encode_best(&data, None, 4, 3).codec, Codec::Full);
        // Every element moved by one unit: grouping cannot help, and the tie goes to `sub`.
        let nudged: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|b| (u32::from_le_bytes(b.try_into().unwrap()) + 1).to_le_bytes())
            .collect();
        assert_eq!(encode_best(&nudged, Some(&data), 4, 3).codec, Codec::Sub);
        // Each element moved by an amount its base value's exponent decides: grouping wins.
        assert_eq!(encode_best(&by_exponent(&data), Some(&data), 4, 3).codec, Codec::SubCtx);
        let bytes: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
        assert_eq!(
            encode_best(&bytes, Some(&data), 1, 3).codec,
            Codec::Sub,
            "bytes have no exponent"
        );
        // A parent of the same length but unrelated content: the delta cannot beat `full` by much.
        let unrelated: Vec<u8> = (0..data.len()).map(|i| (i * 7919 % 251) as u8).collect();
        let chosen = encode_best(&data, Some(&unrelated), 4, 3);
        let full = chunk::encode(Transform::Full, &data, None, 4, 3);
        assert!(chosen.bytes.unwrap().len() <= full.len());
    }

    #[test]
    fn grouping_is_kept_only_where_it_saves() {
        let mut next = crate::codec::test_rng(15);
        let data: Vec<u8> = (0..(SAMPLE_ELEMENTS * 4) as u32)
            .flat_map(|i| ((i as f32 * 0.37).sin() * 0.02).to_le_bytes())
            .collect();
        // Moves mostly unrelated to the base value, as the generated family's: one element in
        // a hundred moved by its exponent. A grouping codes the sample to about `sub`'s size,
        // a byte more or less.
        let slight: Vec<u8> = data
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, b)| {
                let v = u32::from_le_bytes(b.try_into().unwrap());
                let by_base = if i % 100 == 0 { (v >> 23 & 0xFF) % 7 * 16 } else { 0 };
                (v + next() % 16 + by_base).to_le_bytes()
            })
            .collect();
        let n = SAMPLE_ELEMENTS * 4;
        let size = |t| chunk::encode(t, &slight[..n], Some(&data[..n]), 4, 1).len();
        let sub = size(Transform::Sub);
        let grouped: Vec<usize> = context_bits(4)
            .iter()
            .map(|&bits| size(Transform::SubCtx { bits }))
            .collect();
        assert!(
            grouped.iter().any(|&g| g < sub) && grouped.iter().all(|&g| g + g / GROUPING_MARGIN >= sub),
            "a grouping saves a little: sub {sub}, grouped {grouped:?}"
        );
        assert_eq!(encode_best(&slight, Some(&data), 4, 1).codec, Codec::Sub);
        // Moves decided by the base value: the grouping saves much, and is kept.
        assert_eq!(encode_best(&by_exponent(&data), Some(&data), 4, 1).codec, Codec::SubCtx);
    }

    #[test]
    fn a_large_chunk_is_coded_once_with_what_its_sample_chose() {
        let n = SAMPLE_ELEMENTS * 4; // four samples' worth of elements
        let data: Vec<u8> = (0..n as u32)
            .flat_map(|i| ((i as f32 * 0.37).sin() * 0.02).to_le_bytes())
            .collect();
        // A fine-tune-like change: every element moved by a few units of its bit pattern,
        // how many depending on its base value.
        let tuned = by_exponent(&data);
        let chosen = encode_best(&tuned, Some(&data), 4, 1);
        assert_eq!(chosen.codec, Codec::SubCtx);
        // An unrelated parent of the same length: the sample sends it to the fallback, and
        // what is stored costs no more than the chunk alone, give or take the coders the
        // sample chose for it.
        let unrelated: Vec<u8> = (0..data.len()).map(|i| (i * 7919 % 251) as u8).collect();
        let chosen = encode_best(&data, Some(&unrelated), 4, 1);
        assert_eq!(chosen.codec, Codec::Full);
        let bytes = chosen.bytes.expect("a full chunk stores bytes");
        let full = chunk::encode(Transform::Full, &data, None, 4, 1);
        assert!(
            bytes.len() <= full.len() + full.len() / 64,
            "{} against {}",
            bytes.len(),
            full.len()
        );
        let mut back = vec![0u8; data.len()];
        chunk::decode(&bytes, Some(&unrelated), 4, &mut back).expect("decodes");
        assert_eq!(back, data);
    }

    #[test]
    fn samples_hold_enough_elements_and_bytes() {
        assert_eq!(sample_len(4), 128 << 10);
        assert_eq!(sample_len(2), 64 << 10);
        assert_eq!(sample_len(1), SAMPLE_MIN);
        assert_eq!(sample_len(3) % 3, 0, "whole elements");
    }
}
