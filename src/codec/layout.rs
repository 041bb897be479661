//! Finding the numbers inside a file of no known format: which runs of its bytes are arrays
//! of 2-, 4- or 8-byte elements, and where each element starts.
//!
//! A file that sparse cannot parse (a Tesseract `.traineddata`, a pickle, an ONNX graph) still
//! holds its weights as arrays of floats, one after another between headers of odd lengths, so
//! each array starts at its own offset modulo the element width. Coded as single bytes, a
//! fine-tune of such a file shares little with its base; coded with the right width and
//! phase, its differences are as small as a tensor's.
//!
//! The layout shows in the bytes themselves: in an array of floats the byte that holds the
//! sign and the high exponent bits takes few values, the mantissa bytes many. So each window of
//! [`WINDOW`] bytes counts, on its first [`SCORED`] bytes, the values of the bytes at each
//! offset modulo 8. Byte planes of width `w` have the entropy of those counts merged modulo
//! `w`: where eight planes save a sixteenth of the bits of plain bytes (not in text, nor in
//! random bytes), the window takes the narrowest width that saves nearly as much, and the
//! phase (the offset, modulo the width, of the elements' first bytes) that puts the plane of
//! fewest values last, where a little-endian float's sign and exponent are. Runs of windows
//! with the same choice then become runs of whole elements ([`runs`]), and the few bytes
//! between two runs of different phase a run of width 1. The parent plays no part: a
//! fine-tune and its base lay out alike.
//!
//! Why not the entropy of the differences to the parent, phase by phase: byte planes of any
//! phase hold the same bytes, only in another order, so their entropies differ by little more
//! than the carries; which plane holds the exponent tells the phase. On the real Tesseract
//! family (docs/PERFORMANCE.md) a fine-tune went from 0.505 of raw (plain bytes, no delta) to
//! 0.281 stored on a sibling.

/// Bytes per window: each gets one width and phase.
pub const WINDOW: usize = 64 << 10;

/// Bytes at the start of each window whose counts choose its width and phase.
pub const SCORED: usize = 16 << 10;

/// Elements are found where eight planes save more than 1/`MARGIN` of the bits of plain
/// bytes; the narrowest width that saves all but 1/`MARGIN` of that is taken.
const MARGIN: f64 = 16.0;

/// How one window's elements lie: `width` bytes each, the first at an offset congruent to
/// `phase` modulo `width` (in file offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lay {
    pub width: usize,
    pub phase: usize,
}

/// A run of whole elements: `len` bytes from `offset`, a multiple of `width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
    pub width: usize,
}

/// The width and phase of the window `data`, which starts at file offset `at`, from the counts
/// of its first [`SCORED`] bytes.
pub fn choose(at: u64, data: &[u8]) -> Lay {
    let data = &data[..data.len().min(SCORED)];
    let mut counts = [[0u32; 256]; 8];
    for (i, &b) in data.iter().enumerate() {
        counts[((at + i as u64) % 8) as usize][usize::from(b)] += 1;
    }
    // Bits of plane k of width w: the counts of the offsets congruent to k, merged.
    let plane = |w: usize, k: usize| {
        let mut merged = [0u32; 256];
        for c in counts.iter().skip(k).step_by(w) {
            for (m, &n) in merged.iter_mut().zip(c) {
                *m += n;
            }
        }
        entropy_bits(&merged)
    };
    let total = |w: usize| (0..w).map(|k| plane(w, k)).sum::<f64>();
    let (bytes, eight) = (total(1), total(8));
    let saved = bytes - eight;
    let width = match saved > bytes / MARGIN {
        false => 1,
        true => [2, 4, 8]
            .into_iter()
            .find(|&w| bytes - total(w) >= saved * (1.0 - 1.0 / MARGIN))
            .expect("eight planes save what eight planes save"),
    };
    if width == 1 {
        return Lay { width, phase: 0 };
    }
    let top = (0..width)
        .min_by(|&a, &b| plane(width, a).total_cmp(&plane(width, b)))
        .expect("a width of at least one");
    Lay {
        width,
        phase: (top + 1) % width,
    }
}

/// Bits to code the symbols counted in `counts` at their own frequencies.
fn entropy_bits(counts: &[u32; 256]) -> f64 {
    let n = f64::from(counts.iter().sum::<u32>());
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = f64::from(c);
            c * (n / c).log2()
        })
        .sum()
}

/// Tiles `len` bytes with runs of whole elements, from the choices of consecutive windows of
/// `window` bytes (the last may be shorter). Bytes that no run of their window's choice can
/// hold (before the first element, after the last) go to runs of width 1, merged with
/// neighbouring ones.
pub fn runs(lays: &[Lay], window: u64, len: u64) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut push = |offset: u64, end: u64, width: usize| {
        if end <= offset {
            return;
        }
        match out.last_mut() {
            Some(last) if width == 1 && last.width == 1 && last.offset + last.len == offset => {
                last.len = end - last.offset;
            }
            _ => out.push(Run {
                offset,
                len: end - offset,
                width,
            }),
        }
    };
    let mut at = 0u64;
    let mut i = 0;
    while i < lays.len() && at < len {
        let lay = lays[i];
        let mut j = i + 1;
        while j < lays.len() && lays[j] == lay {
            j += 1;
        }
        let end = (j as u64 * window).min(len);
        let w = lay.width as u64;
        let first = at + (lay.phase as u64 + w - at % w) % w;
        let last = first + end.saturating_sub(first) / w * w;
        if first < last {
            push(at, first, 1);
            push(first, last, lay.width);
            push(last, end, 1);
        } else {
            push(at, end, 1);
        }
        at = end;
        i = j;
    }
    push(at, len, 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` float64 values near 0.02 in magnitude, little-endian.
    fn floats(next: &mut impl FnMut() -> u32, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| ((next() as f64 / u32::MAX as f64 - 0.5) * 0.04).to_le_bytes())
            .collect()
    }

    #[test]
    fn finds_the_phase_of_floats_behind_an_odd_header() {
        let mut next = crate::codec::test_rng(3);
        let header = b"Series\x02\x00\xc0ConvNL\x84\x10";
        let mut parent = header.to_vec();
        parent.extend(floats(&mut next, 4000));
        // The child: each float moved by a few units of its last place.
        let mut data = header.to_vec();
        for e in parent[header.len()..].chunks_exact(8) {
            let v = u64::from_le_bytes(e.try_into().expect("8 bytes")) + u64::from(next() % 64);
            data.extend_from_slice(&v.to_le_bytes());
        }
        let phase = header.len() % 8;
        assert_eq!(choose(0, &data), Lay { width: 8, phase });
        assert_eq!(choose(0, &parent), Lay { width: 8, phase });
        // From another window's offset the phase is the same in file offsets.
        assert_eq!(choose(5, &data[5..]), Lay { width: 8, phase });
        // float32 values: four bytes.
        let narrow: Vec<u8> = parent[header.len()..]
            .chunks_exact(8)
            .flat_map(|e| (f64::from_le_bytes(e.try_into().expect("8 bytes")) as f32).to_le_bytes())
            .collect();
        assert_eq!(choose(2, &narrow), Lay { width: 4, phase: 2 });
    }

    #[test]
    fn text_and_noise_stay_bytes() {
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(300);
        assert_eq!(choose(0, &text), Lay { width: 1, phase: 0 });
        let mut next = crate::codec::test_rng(5);
        let noise: Vec<u8> = (0..12_000).map(|_| next() as u8).collect();
        assert_eq!(choose(0, &noise), Lay { width: 1, phase: 0 });
    }

    #[test]
    fn runs_tile_the_file_with_whole_elements() {
        let f8 = |phase| Lay { width: 8, phase };
        let b = Lay { width: 1, phase: 0 };
        let f4 = Lay { width: 4, phase: 1 };
        for (lays, window, len) in [
            (vec![f8(3), f8(3), f8(5), b, f4, f4], 100u64, 590u64),
            (vec![f8(0)], 64, 64),
            (vec![f8(7)], 64, 7),
            (vec![b, b], 10, 20),
            (vec![f4, f8(2), f4], 3, 9),
            (vec![], 10, 0),
        ] {
            let runs = runs(&lays, window, len);
            let mut at = 0;
            for r in &runs {
                assert_eq!(r.offset, at, "{runs:?} tile from 0");
                assert!(r.len > 0 && r.len % r.width as u64 == 0, "{r:?} holds whole elements");
                at += r.len;
            }
            assert_eq!(at, len, "{runs:?} cover all {len} bytes");
            for pair in runs.windows(2) {
                assert!(pair[0].width != 1 || pair[1].width != 1, "{runs:?}: bytes merged");
            }
            // Each wide run sits at its window's phase.
            for r in runs.iter().filter(|r| r.width > 1) {
                let lay = lays[(r.offset / window) as usize];
                assert_eq!((r.width, (r.offset % r.width as u64) as usize), (lay.width, lay.phase));
            }
        }
        let two = runs(&[f8(3), f8(3)], 100, 200);
        let spans: Vec<(u64, u64, usize)> = two.iter().map(|r| (r.offset, r.len, r.width)).collect();
        assert_eq!(spans, [(0, 3, 1), (3, 192, 8), (195, 5, 1)]);
    }
}
