//! Byte planes: the bytes of equal significance of every element, stored together.
//!
//! Floating-point elements have a sign and exponent that change slowly and a mantissa that
//! looks random; grouping byte k of every element into plane k lets the entropy coder see
//! the predictable planes on their own.

/// Splits `data` (little-endian elements of `width` bytes) into `width` planes, written
/// one after another into `out`: plane k holds byte k of every element.
pub fn split(data: &[u8], width: usize, out: &mut [u8]) {
    assert_eq!(data.len(), out.len(), "planes fill exactly the input's length");
    assert!(
        width > 0 && data.len().is_multiple_of(width),
        "chunks hold whole elements"
    );
    match width {
        1 => out.copy_from_slice(data),
        2 | 4 => {
            let done = match width {
                2 => simd::split2(data, out),
                _ => simd::split4(data, out),
            };
            match (done, width) {
                (0, 2) => split_w::<2>(data, out),
                (0, _) => split_w::<4>(data, out),
                // The last few elements, byte by byte.
                _ => {
                    let n = data.len() / width;
                    for (i, element) in data.chunks_exact(width).enumerate().skip(done) {
                        for (k, &byte) in element.iter().enumerate() {
                            out[k * n + i] = byte;
                        }
                    }
                }
            }
        }
        8 => split_w::<8>(data, out),
        _ => {
            let n = data.len() / width;
            for (i, element) in data.chunks_exact(width).enumerate() {
                for (k, &byte) in element.iter().enumerate() {
                    out[k * n + i] = byte;
                }
            }
        }
    }
}

/// Inverse of [`split`]: interleaves `planes` (one slice per byte of an element, each of
/// `out.len() / planes.len()` bytes) into `out`.
pub fn join(planes: &[&[u8]], out: &mut [u8]) {
    let width = planes.len();
    assert!(
        width > 0 && out.len().is_multiple_of(width),
        "chunks hold whole elements"
    );
    let n = out.len() / width;
    assert!(
        planes.iter().all(|p| p.len() == n),
        "planes fill exactly the output's length"
    );
    match width {
        1 => out.copy_from_slice(planes[0]),
        2 | 4 => {
            let done = match width {
                2 => simd::join2(planes[0], planes[1], out),
                _ => simd::join4(planes.try_into().expect("4 planes"), out),
            };
            let rest: Vec<&[u8]> = planes.iter().map(|p| &p[done..]).collect();
            let out = &mut out[width * done..];
            match width {
                2 => join_w::<2>(&rest, out),
                _ => join_w::<4>(&rest, out),
            }
        }
        8 => join_w::<8>(planes, out),
        _ => {
            for (i, element) in out.chunks_exact_mut(width).enumerate() {
                for (byte, plane) in element.iter_mut().zip(planes) {
                    *byte = plane[i];
                }
            }
        }
    }
}

/// Joins in blocks of 16 elements so that the loads from each plane and the stores of whole
/// elements vectorize.
fn join_w<const W: usize>(planes: &[&[u8]], out: &mut [u8]) {
    const BLOCK: usize = 16;
    let planes: [&[u8]; W] = std::array::from_fn(|k| planes[k]);
    let (elements, _) = out.as_chunks_mut::<W>();
    let mut blocks = elements.chunks_exact_mut(BLOCK);
    let mut at = 0;
    for block in &mut blocks {
        let bytes: [&[u8; BLOCK]; W] =
            std::array::from_fn(|k| planes[k][at..at + BLOCK].try_into().expect("a whole block"));
        for (i, e) in block.iter_mut().enumerate() {
            *e = std::array::from_fn(|k| bytes[k][i]);
        }
        at += BLOCK;
    }
    for (i, e) in blocks.into_remainder().iter_mut().enumerate() {
        *e = std::array::from_fn(|k| planes[k][at + i]);
    }
}

/// Splits in blocks of 16 elements, the mirror of [`join_w`]: whole elements are loaded and
/// each plane gets 16 bytes at a time.
fn split_w<const W: usize>(data: &[u8], out: &mut [u8]) {
    const BLOCK: usize = 16;
    let n = data.len() / W;
    let (elements, _) = data.as_chunks::<W>();
    let mut planes: [&mut [u8]; W] = {
        let mut rest = out;
        std::array::from_fn(|_| {
            let (plane, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            plane
        })
    };
    let mut blocks = elements.chunks_exact(BLOCK);
    let mut at = 0;
    for block in &mut blocks {
        let block: &[[u8; W]; BLOCK] = block.try_into().expect("a whole block");
        for (k, plane) in planes.iter_mut().enumerate() {
            let bytes: [u8; BLOCK] = std::array::from_fn(|i| block[i][k]);
            plane[at..at + BLOCK].copy_from_slice(&bytes);
        }
        at += BLOCK;
    }
    for (i, e) in blocks.remainder().iter().enumerate() {
        for (plane, &b) in planes.iter_mut().zip(e) {
            plane[at + i] = b;
        }
    }
}

/// Joins and splits of 2- and 4-byte elements, 16 elements at a time with SSE2 unpacks and
/// packs (part of every x86-64 CPU). Each returns how many elements it did, a multiple of 16;
/// the caller does the rest. On other CPUs they do none.
mod simd {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Interleaves planes `a` and `b` into 2-byte elements in `out`.
    pub fn join2(a: &[u8], b: &[u8], out: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        for ((a, b), out) in a.chunks_exact(16).zip(b.chunks_exact(16)).zip(out.chunks_exact_mut(32)) {
            // SAFETY: every load reads 16 bytes of a 16-byte chunk, every store writes 16 bytes
            // at offset 0 or 16 of a 32-byte chunk.
            unsafe {
                let (a, b) = (_mm_loadu_si128(a.as_ptr().cast()), _mm_loadu_si128(b.as_ptr().cast()));
                let out = out.as_mut_ptr().cast::<__m128i>();
                _mm_storeu_si128(out, _mm_unpacklo_epi8(a, b));
                _mm_storeu_si128(out.add(1), _mm_unpackhi_epi8(a, b));
            }
        }
        match cfg!(target_arch = "x86_64") {
            true => (a.len().min(b.len()).min(out.len() / 2)) / 16 * 16,
            false => 0,
        }
    }

    /// Interleaves four planes into 4-byte elements in `out`.
    pub fn join4(p: &[&[u8]; 4], out: &mut [u8]) -> usize {
        let n = p.iter().map(|p| p.len()).min().expect("4 planes").min(out.len() / 4) / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        for (i, out) in out[..4 * n].chunks_exact_mut(64).enumerate() {
            let at = 16 * i;
            // SAFETY: every load reads bytes at..at + 16 of a plane of at least n >= at + 16
            // bytes, every store writes 16 bytes at offset 0, 16, 32 or 48 of a 64-byte chunk.
            unsafe {
                let [a, b, c, d] = p.map(|p| _mm_loadu_si128(p[at..at + 16].as_ptr().cast()));
                let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
                let out = out.as_mut_ptr().cast::<__m128i>();
                _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
                _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
            }
        }
        match cfg!(target_arch = "x86_64") {
            true => n,
            false => 0,
        }
    }

    /// The even and the odd bytes of 32 bytes `x0`, `x1`, each as 16 bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    fn deinterleave(x0: __m128i, x1: __m128i) -> (__m128i, __m128i) {
        let low = _mm_set1_epi16(0xff);
        let even = _mm_packus_epi16(_mm_and_si128(x0, low), _mm_and_si128(x1, low));
        let odd = _mm_packus_epi16(_mm_srli_epi16::<8>(x0), _mm_srli_epi16::<8>(x1));
        (even, odd)
    }

    /// Splits 2-byte elements `data` into two planes of `n` bytes, one after the other in `out`.
    pub fn split2(data: &[u8], out: &mut [u8]) -> usize {
        let n = data.len() / 2;
        #[cfg(target_arch = "x86_64")]
        let (p0, p1) = out.split_at_mut(n);
        #[cfg(target_arch = "x86_64")]
        for ((x, p0), p1) in data
            .chunks_exact(32)
            .zip(p0.chunks_exact_mut(16))
            .zip(p1.chunks_exact_mut(16))
        {
            // SAFETY: loads read 16 bytes at offset 0 or 16 of a 32-byte chunk, stores write
            // a whole 16-byte chunk.
            unsafe {
                let x = x.as_ptr().cast::<__m128i>();
                let (even, odd) = deinterleave(_mm_loadu_si128(x), _mm_loadu_si128(x.add(1)));
                _mm_storeu_si128(p0.as_mut_ptr().cast(), even);
                _mm_storeu_si128(p1.as_mut_ptr().cast(), odd);
            }
        }
        match cfg!(target_arch = "x86_64") {
            true => n / 16 * 16,
            false => 0,
        }
    }

    /// Splits 4-byte elements `data` into four planes of `n` bytes, one after the other in `out`.
    pub fn split4(data: &[u8], out: &mut [u8]) -> usize {
        let n = data.len() / 4;
        let done = n / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        for (i, x) in data[..4 * done].chunks_exact(64).enumerate() {
            let at = 16 * i;
            // SAFETY: loads read 16 bytes at offset 0, 16, 32 or 48 of a 64-byte chunk; plane k
            // starts at k * n in `out`, and at + 16 <= done <= n, so each store writes within
            // plane k.
            unsafe {
                let x = x.as_ptr().cast::<__m128i>();
                let (e_lo, o_lo) = deinterleave(_mm_loadu_si128(x), _mm_loadu_si128(x.add(1)));
                let (e_hi, o_hi) = deinterleave(_mm_loadu_si128(x.add(2)), _mm_loadu_si128(x.add(3)));
                let (b0, b2) = deinterleave(e_lo, e_hi);
                let (b1, b3) = deinterleave(o_lo, o_hi);
                for (k, bytes) in [b0, b1, b2, b3].into_iter().enumerate() {
                    _mm_storeu_si128(out[k * n + at..k * n + at + 16].as_mut_ptr().cast(), bytes);
                }
            }
        }
        match cfg!(target_arch = "x86_64") {
            true => done,
            false => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_join_is_identity_for_every_width() {
        for width in [1, 2, 3, 4, 8, 16] {
            let data: Vec<u8> = (0..width * 37).map(|i| (i * 31 % 251) as u8).collect();
            let mut planes = vec![0; data.len()];
            split(&data, width, &mut planes);
            let mut back = vec![0; data.len()];
            let slices: Vec<&[u8]> = planes.chunks(37).collect();
            join(&slices, &mut back);
            assert_eq!(back, data, "width {width}");
        }
    }

    #[test]
    fn every_length_splits_and_joins_as_byte_by_byte() {
        for width in [2, 4, 8] {
            for n in 0..100 {
                let data: Vec<u8> = (0..width * n).map(|i| (i * 37 % 253) as u8).collect();
                let expected: Vec<u8> = (0..width)
                    .flat_map(|k| data.iter().skip(k).step_by(width).copied())
                    .collect();
                let mut planes = vec![0xAA; data.len()];
                split(&data, width, &mut planes);
                assert_eq!(planes, expected, "split, width {width}, {n} elements");
                let slices: Vec<&[u8]> = (0..width).map(|k| &expected[k * n..(k + 1) * n]).collect();
                let mut back = vec![0xAA; data.len()];
                join(&slices, &mut back);
                assert_eq!(back, data, "join, width {width}, {n} elements");
            }
        }
    }

    #[test]
    fn plane_k_holds_byte_k() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut planes = [0; 8];
        split(&data, 4, &mut planes);
        assert_eq!(planes, [1, 5, 2, 6, 3, 7, 4, 8]);
    }
}
