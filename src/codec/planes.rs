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
        2 | 4 => match sse2::split(data, width, out) {
            0 => match width {
                2 => split_w::<2>(data, out),
                _ => split_w::<4>(data, out),
            },
            done => split_bytes(data, width, out, done),
        },
        8 => split_w::<8>(data, out),
        _ => split_bytes(data, width, out, 0),
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
        2 | 4 => match sse2::join(planes, out) {
            0 => match width {
                2 => join_w::<2>(planes, out),
                _ => join_w::<4>(planes, out),
            },
            done => join_bytes(planes, out, done),
        },
        8 => join_w::<8>(planes, out),
        _ => join_bytes(planes, out, 0),
    }
}

/// [`split`] byte by byte, of the elements from `from` on.
fn split_bytes(data: &[u8], width: usize, out: &mut [u8], from: usize) {
    let n = data.len() / width;
    for (i, element) in data.chunks_exact(width).enumerate().skip(from) {
        for (k, &byte) in element.iter().enumerate() {
            out[k * n + i] = byte;
        }
    }
}

/// [`join`] byte by byte, of the elements from `from` on.
fn join_bytes(planes: &[&[u8]], out: &mut [u8], from: usize) {
    let width = planes.len();
    for (i, element) in out.chunks_exact_mut(width).enumerate().skip(from) {
        for (byte, plane) in element.iter_mut().zip(planes) {
            *byte = plane[i];
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

/// [`split`] and [`join`] of 2- and 4-byte elements, 16 elements at a time with SSE2 unpacks
/// and packs (part of every x86-64 CPU); the byte loops had taken a load, a shift and an or per
/// byte. Each returns how many elements it did, a multiple of 16, for the caller to finish; on
/// other CPUs none.
mod sse2 {
    /// [`super::split`] of the first elements of `data` (2- or 4-byte elements).
    pub fn split(data: &[u8], width: usize, out: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        return x86::split(data, width, out);
        #[cfg(not(target_arch = "x86_64"))]
        return 0;
    }

    /// [`super::join`] of the first elements of `out` (2 or 4 planes).
    pub fn join(planes: &[&[u8]], out: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        return x86::join(planes, out);
        #[cfg(not(target_arch = "x86_64"))]
        return 0;
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        pub fn split(data: &[u8], width: usize, out: &mut [u8]) -> usize {
            let n = data.len() / width;
            let done = n / 16 * 16;
            let mut store = |k: usize, at: usize, bytes: __m128i| {
                // SAFETY: plane k starts at k * n in `out`, and at + 16 <= done <= n.
                unsafe { _mm_storeu_si128(out[k * n + at..k * n + at + 16].as_mut_ptr().cast(), bytes) }
            };
            for (i, x) in data[..width * done].chunks_exact(16 * width).enumerate() {
                let at = 16 * i;
                let x = x.as_ptr().cast::<__m128i>();
                // SAFETY: the loads read the 16 * width bytes of chunk `x`.
                unsafe {
                    let (even, odd) = deinterleave(_mm_loadu_si128(x), _mm_loadu_si128(x.add(1)));
                    if width == 2 {
                        store(0, at, even);
                        store(1, at, odd);
                    } else {
                        let (e_hi, o_hi) = deinterleave(_mm_loadu_si128(x.add(2)), _mm_loadu_si128(x.add(3)));
                        let ((b0, b2), (b1, b3)) = (deinterleave(even, e_hi), deinterleave(odd, o_hi));
                        for (k, bytes) in [b0, b1, b2, b3].into_iter().enumerate() {
                            store(k, at, bytes);
                        }
                    }
                }
            }
            done
        }

        pub fn join(planes: &[&[u8]], out: &mut [u8]) -> usize {
            let width = planes.len();
            let done = out.len() / width / 16 * 16;
            for (i, out) in out[..width * done].chunks_exact_mut(16 * width).enumerate() {
                let at = 16 * i;
                // SAFETY: each load reads bytes at..at + 16 of a plane of out.len() / width >=
                // done >= at + 16 bytes; store j writes bytes 16j..16j + 16 of the
                // 16 * width-byte chunk `out`.
                unsafe {
                    let load = |k: usize| _mm_loadu_si128(planes[k][at..at + 16].as_ptr().cast());
                    let out = out.as_mut_ptr().cast::<__m128i>();
                    let (a, b) = (load(0), load(1));
                    let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                    if width == 2 {
                        _mm_storeu_si128(out, ab_lo);
                        _mm_storeu_si128(out.add(1), ab_hi);
                    } else {
                        let (c, d) = (load(2), load(3));
                        let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
                        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
                        _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
                        _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
                        _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
                    }
                }
            }
            done
        }

        /// The even and the odd bytes of 32 bytes `x0`, `x1`, each as 16 bytes.
        #[target_feature(enable = "sse2")]
        fn deinterleave(x0: __m128i, x1: __m128i) -> (__m128i, __m128i) {
            let low = _mm_set1_epi16(0xff);
            let even = _mm_packus_epi16(_mm_and_si128(x0, low), _mm_and_si128(x1, low));
            let odd = _mm_packus_epi16(_mm_srli_epi16::<8>(x0), _mm_srli_epi16::<8>(x1));
            (even, odd)
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
