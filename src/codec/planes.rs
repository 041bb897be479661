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
        2 => split_w::<2>(data, out),
        4 => split_w::<4>(data, out),
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
        2 => join_w::<2>(planes, out),
        4 => join_w::<4>(planes, out),
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
    fn plane_k_holds_byte_k() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut planes = [0; 8];
        split(&data, 4, &mut planes);
        assert_eq!(planes, [1, 5, 2, 6, 3, 7, 4, 8]);
    }
}
