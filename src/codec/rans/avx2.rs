//! rANS with AVX2: decoding several blocks at once, and coding several blocks at once. The
//! result of either is exactly the scalar coder's, which the tests compare it with.
//!
//! The states of a block fill one vector register, and each round takes one step of every
//! block, so that the latency of one block's step (table gathers, multiplies, the
//! renormalization) is hidden behind the others'.
//!
//! Decoding: on the real fp32 base's exponent planes, eight blocks at once decode at twice the
//! speed of one at a time (`cargo test --release rans_speed -- --ignored --nocapture`); four at
//! once gave 1.4 times.
//!
//! Coding: up to four blocks of a plane at once. The division of a state by its byte's
//! frequency, which the scalar coder does with a 64-bit multiply per state, is a multiply by
//! the frequency's reciprocal in double precision: exact here (see `x86::encode`). On the real
//! bf16 fine-tune, rANS coding took 16% of the CPU of `add` with the scalar coder and 8% with
//! this one (docs/PERFORMANCE.md).

use super::{Block, Coding};

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

/// Codes every group of each block, up to four blocks at once. Each block's `pos` must be at
/// least the bytes of its groups, and the CPU have AVX2 ([`available`]).
pub fn encode(blocks: &mut [Coding<'_>]) {
    assert!(available(), "AVX2 is there");
    assert!(
        blocks
            .iter()
            .all(|c| c.pos >= c.groups.len() * super::LANES && c.pos <= c.words.len()),
        "room for a word per byte below pos"
    );
    loop {
        let mut open: Vec<&mut Coding<'_>> = blocks.iter_mut().filter(|c| !c.groups.is_empty()).take(4).collect();
        let Some(steps) = open.iter().map(|c| c.groups.len()).min() else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is there, and every block has room for a word per byte below its `pos`
        // (both asserted above, and coding keeps it so).
        unsafe {
            match open.len() {
                1 => x86::encode::<1>(open.as_mut_slice().try_into().expect("1 block"), steps),
                2 => x86::encode::<2>(open.as_mut_slice().try_into().expect("2 blocks"), steps),
                3 => x86::encode::<3>(open.as_mut_slice().try_into().expect("3 blocks"), steps),
                4 => x86::encode::<4>(open.as_mut_slice().try_into().expect("4 blocks"), steps),
                n => unreachable!("{n} blocks: at most 4 at once"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("available() is false off x86-64: {} blocks, {steps} groups", open.len());
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{Block, Coding, LANES, LOW, MASK, SCALE, TOTAL};

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

    /// For each mask of the lanes that shed a word: the lanes that do, in order, at the end of
    /// eight slots (the slots before them are filled with lane 0 and not kept).
    static PACK: [[u32; LANES]; 1 << LANES] = pack();

    const fn pack() -> [[u32; LANES]; 1 << LANES] {
        let mut table = [[0; LANES]; 1 << LANES];
        let mut mask = 0;
        while mask < 1 << LANES {
            let mut k = LANES - (mask as u32).count_ones() as usize;
            let mut j = 0;
            while j < LANES {
                if (mask >> j) & 1 == 1 {
                    table[mask][k] = j as u32;
                    k += 1;
                }
                j += 1;
            }
            mask += 1;
        }
        table
    }

    /// Codes the last `steps` groups of each of the `K` blocks, one group of every block per
    /// round, so that the latency of one block's step hides behind the others'.
    ///
    /// # Safety
    /// The CPU has AVX2; each block has at least `steps` groups and room for a word per byte
    /// below its `pos`.
    ///
    /// The quotient `q = floor(x / f)` of a 32-bit state by a frequency `f` in 1..=4096 is
    /// `floor((x + 0.5) * fl(1/f))` in double precision: `(x + 0.5) / f` lies at least
    /// `0.5 / f`, at least `2^-13`, from an integer, and the two roundings move it by at most
    /// `2^32 * 2^-52 = 2^-20`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn encode<const K: usize>(blocks: &mut [&mut Coding<'_>; K], steps: usize) {
        let low16 = _mm256_set1_epi32(0xFFFF);
        let total = _mm256_set1_epi32(TOTAL as i32);
        let sign = _mm_set1_epi32(i32::MIN);
        let offset = _mm256_set1_pd(2_147_483_648.5);
        let mut state: [__m256i; K] = std::array::from_fn(|s| _mm256_loadu_si256(blocks[s].x.as_ptr().cast()));
        let packed: [*const i32; K] = std::array::from_fn(|s| blocks[s].table.packed.as_ptr().cast());
        let rcp: [*const f64; K] = std::array::from_fn(|s| blocks[s].table.rcp.as_ptr());
        let words: [*mut u16; K] = std::array::from_fn(|s| blocks[s].words.as_mut_ptr());
        let mut pos: [usize; K] = std::array::from_fn(|s| blocks[s].pos);
        let last: [usize; K] = std::array::from_fn(|s| blocks[s].groups.len());
        for t in 1..=steps {
            for s in 0..K {
                // SAFETY (reads): indices are bytes, and every table has 256 entries.
                let group = &blocks[s].groups[last[s] - t];
                let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(group.as_ptr().cast()));
                let e = _mm256_i32gather_epi32::<4>(packed[s], bytes);
                let freq = _mm256_and_si256(e, low16);
                // A state sheds a word when x >= freq << 20 (the scalar coder's bound).
                let keep = _mm256_cmpgt_epi32(freq, _mm256_srli_epi32::<20>(state[s]));
                let shed = !(_mm256_movemask_ps(_mm256_castsi256_ps(keep)) as usize) & 0xFF;
                let order = _mm256_loadu_si256(PACK[shed].as_ptr().cast());
                let w = _mm256_and_si256(_mm256_permutevar8x32_epi32(state[s], order), low16);
                let w = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(w, w));
                // SAFETY (write): pos >= 8, as pos is at least the bytes left to code, this
                // group's among them; the slots below the kept words are free.
                _mm_storeu_si128(words[s].add(pos[s] - LANES).cast(), _mm256_castsi256_si128(w));
                pos[s] -= shed.count_ones() as usize;
                let v = _mm256_blendv_epi8(_mm256_srli_epi32::<16>(state[s]), state[s], keep);
                // q = v / freq, then v + q * (TOTAL - freq) + start.
                let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let lo = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(lo, sign)), offset);
                let hi = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(hi, sign)), offset);
                let (blo, bhi) = (_mm256_castsi256_si128(bytes), _mm256_extracti128_si256::<1>(bytes));
                let q0 = _mm256_cvttpd_epi32(_mm256_mul_pd(lo, _mm256_i32gather_pd::<8>(rcp[s], blo)));
                let q1 = _mm256_cvttpd_epi32(_mm256_mul_pd(hi, _mm256_i32gather_pd::<8>(rcp[s], bhi)));
                let q = _mm256_set_m128i(q1, q0);
                let step = _mm256_mullo_epi32(q, _mm256_sub_epi32(total, freq));
                state[s] = _mm256_add_epi32(_mm256_add_epi32(v, step), _mm256_srli_epi32::<16>(e));
            }
        }
        for (s, block) in blocks.iter_mut().enumerate() {
            _mm256_storeu_si256(block.x.as_mut_ptr().cast(), state[s]);
            block.pos = pos[s];
            block.groups = &block.groups[..last[s] - steps];
        }
    }
}
