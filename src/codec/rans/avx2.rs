//! rANS decoding of several blocks at once with AVX2. The [`LANES`](super::LANES) states of a
//! block fill one vector register, and each round takes one step of every block, so that the
//! latency of one block's step (a table gather, a multiply, the renormalization) is hidden
//! behind the others'. The result is exactly the scalar decoder's, which the tests compare it
//! with.
//!
//! On the real fp32 base's exponent planes, eight blocks at once decode at twice the speed of
//! one at a time (`cargo test --release rans_speed -- --ignored --nocapture`); four at
//! once gave 1.4 times.

use super::Block;

/// Whether this CPU can run [`groups`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Decodes the next `groups` groups of [`LANES`](super::LANES) bytes of each block.
/// Every block must have that many [`Block::safe_groups`], and the CPU AVX2 ([`available`]).
pub fn groups(blocks: &mut [Block<'_>], groups: usize) {
    assert!(available(), "AVX2 is there");
    assert!(
        blocks.iter().all(|s| s.safe_groups() >= groups),
        "every block has the groups"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 is there, and every block has `groups` safe groups (both asserted above).
    unsafe {
        match blocks.len() {
            1 => x86::groups::<1>(blocks.try_into().expect("1 block"), groups),
            2 => x86::groups::<2>(blocks.try_into().expect("2 blocks"), groups),
            3 => x86::groups::<3>(blocks.try_into().expect("3 blocks"), groups),
            4 => x86::groups::<4>(blocks.try_into().expect("4 blocks"), groups),
            5 => x86::groups::<5>(blocks.try_into().expect("5 blocks"), groups),
            6 => x86::groups::<6>(blocks.try_into().expect("6 blocks"), groups),
            7 => x86::groups::<7>(blocks.try_into().expect("7 blocks"), groups),
            8 => x86::groups::<8>(blocks.try_into().expect("8 blocks"), groups),
            n => panic!("{n} blocks: at most 8 at once"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{Block, LANES, LOW, MASK, SCALE};

    const _: () = assert!(LANES == 8, "one state per 32-bit lane of a 256-bit register");
    const _: () = assert!(LOW == 1 << 16, "a state renormalizes below 2^16");

    /// For each mask of the lanes that take a word, lane j's word among the group's: how many
    /// lanes before j take one (the scalar decoder hands words out in lane order).
    static SPREAD: [[u32; LANES]; 1 << LANES] = spread();

    const fn spread() -> [[u32; LANES]; 1 << LANES] {
        let mut table = [[0; LANES]; 1 << LANES];
        let mut mask = 0;
        while mask < 1 << LANES {
            let (mut k, mut j) = (0, 0);
            while j < LANES {
                table[mask][j] = k;
                k += (mask >> j) as u32 & 1;
                j += 1;
            }
            mask += 1;
        }
        table
    }

    /// # Safety
    /// The CPU has AVX2, and every block has at least `groups` [`Block::safe_groups`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn groups<const K: usize>(blocks: &mut [Block<'_>; K], groups: usize) {
        let mask = _mm256_set1_epi32(MASK as i32);
        let one = _mm256_set1_epi32(1);
        let zero = _mm256_setzero_si256();
        // Byte 0 of each 32-bit lane to the low 4 bytes of its 128-bit half.
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let mut x: [__m256i; K] = std::array::from_fn(|s| _mm256_loadu_si256(blocks[s].x.as_ptr().cast()));
        let slots: [*const i32; K] = std::array::from_fn(|s| blocks[s].table.slots.as_ptr().cast());
        let words: [*const u8; K] = std::array::from_fn(|s| blocks[s].words.as_ptr());
        let out: [*mut u8; K] = std::array::from_fn(|s| blocks[s].out.as_mut_ptr());
        let mut pos = [0usize; K];
        for g in 0..groups {
            for s in 0..K {
                // SAFETY (reads and writes): indices are masked to the table's slots; a block
                // with `groups` safe groups has 8 output bytes per group and at least 16 bytes of
                // words from any group's start (a group takes at most 16).
                let e = _mm256_i32gather_epi32::<4>(slots[s], _mm256_and_si256(x[s], mask));
                let bytes = _mm256_shuffle_epi8(e, pick);
                let eight = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256::<1>(bytes));
                _mm_storel_epi64(out[s].add(g * LANES).cast(), eight);
                let freq = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32::<8>(e), mask), one);
                let v = _mm256_add_epi32(
                    _mm256_mullo_epi32(freq, _mm256_srli_epi32::<{ SCALE as i32 }>(x[s])),
                    _mm256_srli_epi32::<20>(e),
                );
                let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(v), zero);
                let taking = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(words[s].add(pos[s]).cast()));
                let w = _mm256_permutevar8x32_epi32(w, _mm256_loadu_si256(SPREAD[taking].as_ptr().cast()));
                x[s] = _mm256_blendv_epi8(v, _mm256_or_si256(_mm256_slli_epi32::<16>(v), w), need);
                pos[s] += 2 * taking.count_ones() as usize;
            }
        }
        for (s, block) in blocks.iter_mut().enumerate() {
            _mm256_storeu_si256(block.x.as_mut_ptr().cast(), x[s]);
            block.advance(groups * LANES, pos[s]);
        }
    }
}
