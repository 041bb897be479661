//! Grouping a block's elements by a context taken from the parent, before the entropy stage
//! (a chunk is coded as blocks, see [`super::chunk`]; each block is grouped on its own).
//!
//! How far a weight moves during fine-tuning, counted in units of its bit pattern, depends on
//! where the base value sits: its exponent and its leading mantissa bits. Elements whose parent
//! values share those bits tend to share their difference. Stably sorting a block's differences
//! by the parent's `k` bits after the sign bit puts alike differences next to each other, where
//! zstd finds them. The decoder sees the same parent and computes the same order, so the order
//! costs no bytes. On the real MiniLM pair this took the stored fp32 fine-tune from 0.404 to
//! 0.345 of raw, the bf16 one from 0.195 to 0.171 (docs/PERFORMANCE.md).

use std::cell::RefCell;

use super::delta::{self, Lane};

/// The largest context: 2^16 buckets.
pub const MAX_BITS: u32 = 16;

/// `out` = the zigzag differences `data - parent` (as [`delta::sub`]), grouped stably by the
/// `bits` bits after the sign bit of each parent element (`width`-byte little-endian elements).
pub fn group_sub(data: &[u8], parent: &[u8], width: usize, bits: u32, out: &mut [u8]) {
    assert!(data.len() == parent.len() && data.len() == out.len(), "equal lengths");
    match width {
        2 => group_sub_w::<2>(data, parent, bits, out),
        4 => group_sub_w::<4>(data, parent, bits, out),
        8 => group_sub_w::<8>(data, parent, bits, out),
        _ => panic!("contexts are for 2-, 4- and 8-byte elements"),
    }
}

/// Inverse of [`group_sub`]: `out` = `parent` plus the grouped differences put back in place.
pub fn ungroup_add(grouped: &[u8], parent: &[u8], width: usize, bits: u32, out: &mut [u8]) {
    assert!(
        grouped.len() == parent.len() && grouped.len() == out.len(),
        "equal lengths"
    );
    match width {
        2 => ungroup_add_w::<2>(grouped, parent, bits, out),
        4 => ungroup_add_w::<4>(grouped, parent, bits, out),
        8 => ungroup_add_w::<8>(grouped, parent, bits, out),
        _ => panic!("contexts are for 2-, 4- and 8-byte elements"),
    }
}

// The element width is a constant in each of these, so every element moves as one load and
// one store. Grouping is a counting sort: a first pass takes each element's key from the
// parent (a loop the compiler vectorizes) and counts the keys, the bucket sizes give each
// bucket's start, and a second pass moves each element to (or from) the next free slot of
// its bucket, so no permutation is ever stored. Ungrouping keeps the second pass down to a load
// and a store per element and adds the parent in a vectorized pass of its own: over the real
// MiniLM pair that took it from 2.7 to 2.1 ns per fp32 element and from 1.7 to 1.2-1.5 per
// bf16 one (examples/context_bench.rs, docs/PERFORMANCE.md).

/// Per-thread scratch of a counting sort: each element's key, each bucket's count in four
/// tables, and each bucket's next free slot for the elements of each half of the block, side
/// by side (two tables, one per half, were 3-6% slower: `examples/context_bench.rs`).
/// Indexed by 16-bit keys, the tables need no bounds checks.
struct Scratch {
    keys: Vec<u16>,
    counts: Box<[[u32; 4]; 1 << MAX_BITS]>,
    next: Box<[[u32; 2]; 1 << MAX_BITS]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        keys: Vec::new(),
        counts: vec![[0; 4]; 1 << MAX_BITS].try_into().expect("the table's size"),
        next: vec![[0; 2]; 1 << MAX_BITS].try_into().expect("the table's size"),
    });
}

/// The elements of a block's first half, a multiple of four (the counting's unroll); the
/// second half takes the rest.
fn first_half(n: usize) -> usize {
    n / 2 / 4 * 4
}

/// Runs `f` with every parent element's key and, for each half of the elements, each bucket's
/// next free slot: a counting sort's first half. Counting into four tables in turn keeps
/// elements with equal keys from waiting on each other's increments; the second pass moves the
/// two halves side by side for the same reason (a run of equal keys is a chain of dependent
/// increments of one slot).
fn with_starts<const W: usize, R>(
    parent: &[u8],
    bits: u32,
    f: impl FnOnce(&[u16], &mut [[u32; 2]; 1 << MAX_BITS]) -> R,
) -> R {
    assert!((1..=MAX_BITS).contains(&bits), "a context of 1 to 16 bits");
    assert!(
        parent.len() / W <= u32::MAX as usize,
        "chunks are far smaller than 2^32 elements"
    );
    let shift = 8 * W as u32 - 1 - bits;
    let mask = (1u64 << bits) - 1;
    SCRATCH.with_borrow_mut(|Scratch { keys, counts, next }| {
        let (elements, _) = parent.as_chunks::<W>();
        keys.clear();
        keys.extend(elements.iter().map(|e| ((Lane::<W>::load(e).0 >> shift) & mask) as u16));
        let buckets = 1usize << bits;
        counts[..buckets].fill([0; 4]);
        let half = first_half(keys.len());
        let count = |counts: &mut [[u32; 4]; 1 << MAX_BITS], keys: &[u16]| {
            let (quads, rest) = keys.as_chunks::<4>();
            for q in quads {
                for (lane, &k) in q.iter().enumerate() {
                    counts[usize::from(k)][lane] += 1;
                }
            }
            for &k in rest {
                counts[usize::from(k)][0] += 1;
            }
        };
        count(counts, &keys[..half]);
        for (m, c) in next[..buckets].iter_mut().zip(&counts[..buckets]) {
            m[1] = c.iter().sum::<u32>();
        }
        count(counts, &keys[half..]);
        let mut sum = 0;
        for (m, c) in next[..buckets].iter_mut().zip(&counts[..buckets]) {
            *m = [sum, m[1] + sum];
            sum += c.iter().sum::<u32>();
        }
        f(keys, next)
    })
}

fn group_sub_w<const W: usize>(data: &[u8], parent: &[u8], bits: u32, out: &mut [u8]) {
    with_starts::<W, _>(parent, bits, |keys, next| {
        let (dst, _) = out.as_chunks_mut::<W>();
        let (data, _) = data.as_chunks::<W>();
        let (parent, _) = parent.as_chunks::<W>();
        let half = first_half(keys.len());
        let mut put = |r: usize, i: usize| {
            let slot = &mut next[usize::from(keys[i])][r];
            Lane::<W>::load(&data[i])
                .sub_from(Lane::load(&parent[i]))
                .store(&mut dst[*slot as usize]);
            *slot += 1;
        };
        for i in 0..half {
            put(0, i);
            put(1, half + i);
        }
        for i in 2 * half..keys.len() {
            put(1, i);
        }
    });
}

fn ungroup_add_w<const W: usize>(grouped: &[u8], parent: &[u8], bits: u32, out: &mut [u8]) {
    with_starts::<W, _>(parent, bits, |keys, next| {
        let (src, _) = grouped.as_chunks::<W>();
        let (dst, _) = out.as_chunks_mut::<W>();
        let half = first_half(keys.len());
        let (first, second) = dst.split_at_mut(half);
        let (ka, kb) = keys.split_at(half);
        for ((oa, &k1), (ob, &k2)) in first.iter_mut().zip(ka).zip(second.iter_mut().zip(kb)) {
            let s1 = &mut next[usize::from(k1)][0];
            *oa = src[*s1 as usize];
            *s1 += 1;
            let s2 = &mut next[usize::from(k2)][1];
            *ob = src[*s2 as usize];
            *s2 += 1;
        }
        for (o, &k) in second[half..].iter_mut().zip(&kb[half..]) {
            let slot = &mut next[usize::from(k)][1];
            *o = src[*slot as usize];
            *slot += 1;
        }
    });
    delta::unsub(out, parent, W);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_chunks_group_as_one_stable_sort() {
        let mut next = crate::codec::test_rng(7);
        for (width, bits, n) in [(4, 11, 100_003), (2, 8, 65_537), (8, 12, 70_001), (4, 16, 1_100_000)] {
            // Parent values with few exponents, as a model's weights have.
            let parent: Vec<u8> = (0..n)
                .flat_map(|_| {
                    let v = (next() as f64 / u32::MAX as f64 - 0.5) * 0.04;
                    match width {
                        2 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
                        4 => (v as f32).to_le_bytes().to_vec(),
                        _ => v.to_le_bytes().to_vec(),
                    }
                })
                .collect();
            let data: Vec<u8> = parent.iter().map(|&b| b ^ (next() % 4) as u8).collect();
            let mut grouped = vec![0; data.len()];
            group_sub(&data, &parent, width, bits, &mut grouped);
            // The reference: the differences, stably sorted by the parent's key.
            let mut diffs = vec![0; data.len()];
            crate::codec::delta::sub(&data, &parent, width, &mut diffs);
            let shift = 8 * width as u32 - 1 - bits;
            let key = |e: &[u8]| {
                let mut v = [0u8; 8];
                v[..width].copy_from_slice(e);
                (u64::from_le_bytes(v) >> shift) & ((1 << bits) - 1)
            };
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| key(&parent[i * width..(i + 1) * width]));
            let expected: Vec<u8> = order
                .iter()
                .flat_map(|&i| diffs[i * width..(i + 1) * width].to_vec())
                .collect();
            assert!(grouped == expected, "width {width}, {bits} bits");
            let mut back = vec![0; data.len()];
            ungroup_add(&grouped, &parent, width, bits, &mut back);
            assert!(back == data, "width {width}, {bits} bits");
        }
    }

    #[test]
    fn grouping_puts_alike_parents_together_and_round_trips() {
        let floats = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|f| f.to_le_bytes()).collect() };
        let parent = floats(&[1.5, -0.25, 1.75, 0.25, -1.5, 0.3]);
        let data: Vec<u8> = parent
            .as_chunks::<4>()
            .0
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (u32::from_le_bytes(*p) + i as u32).to_le_bytes())
            .collect();
        let mut grouped = vec![0; 24];
        group_sub(&data, &parent, 4, 8, &mut grouped);
        // Exponent only (8 bits after the sign): -0.25, 0.25 and 0.3 share one, the rest
        // another; element i moved by i units, zigzag-coded as 2i.
        let diffs: Vec<u32> = grouped
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| u32::from_le_bytes(*b))
            .collect();
        assert_eq!(diffs, [2, 6, 10, 0, 4, 8]);
        let mut back = vec![0; 24];
        ungroup_add(&grouped, &parent, 4, 8, &mut back);
        assert_eq!(back, data);
        for width in [2, 8] {
            let mut g = vec![0; 24];
            group_sub(&data, &parent, width, 5, &mut g);
            ungroup_add(&g, &parent, width, 5, &mut back);
            assert_eq!(back, data, "width {width}");
        }
    }
}
