//! Differences between a chunk and its parent's chunk, element by element.
//!
//! `xor` is the bitwise difference. `sub` reads both elements as unsigned integers of the
//! element's width, takes the wrapping difference and zigzag-codes it, so that small moves of a
//! float in either direction become small integers: the high byte planes are then mostly zero.
//! On the real MiniLM pair `sub` stores about a fifth less than `xor` (docs/PERFORMANCE.md).

/// `out[i] = new[i] ^ old[i]`; applying it again to `old` gives back `new`.
pub fn xor(new: &[u8], old: &[u8], out: &mut [u8]) {
    assert!(new.len() == old.len() && new.len() == out.len(), "xor of equal lengths");
    for ((o, a), b) in out.iter_mut().zip(new).zip(old) {
        *o = a ^ b;
    }
}

/// Zigzag-coded wrapping difference `new - old` of `width`-byte little-endian integers.
/// Widths other than 1, 2, 4, 8 (and sub-byte dtypes) are handled bytewise (width 1).
pub fn sub(new: &[u8], old: &[u8], width: usize, out: &mut [u8]) {
    assert!(new.len() == old.len() && new.len() == out.len(), "sub of equal lengths");
    match width {
        2 => lanes::<2>(new, old, out, Lane::sub_from),
        4 => lanes::<4>(new, old, out, Lane::sub_from),
        8 => lanes::<8>(new, old, out, Lane::sub_from),
        _ => lanes::<1>(new, old, out, Lane::sub_from),
    }
}

/// Inverse of [`sub`], in place: `data` holds the delta and becomes `old + unzigzag(delta)`.
pub fn unsub(data: &mut [u8], old: &[u8], width: usize) {
    assert_eq!(data.len(), old.len(), "unsub of equal lengths");
    match width {
        2 => lanes_in_place::<2>(data, old, Lane::add_to),
        4 => lanes_in_place::<4>(data, old, Lane::add_to),
        8 => lanes_in_place::<8>(data, old, Lane::add_to),
        _ => lanes_in_place::<1>(data, old, Lane::add_to),
    }
}

/// Inverse of [`xor`], in place: `data ^= old`.
pub fn unxor(data: &mut [u8], old: &[u8]) {
    assert_eq!(data.len(), old.len(), "xor of equal lengths");
    for (d, o) in data.iter_mut().zip(old) {
        *d ^= o;
    }
}

/// Applies `f` to pairs of `W`-byte little-endian lanes of `a` and `b`, writing to `out`.
#[inline(always)]
fn lanes<const W: usize>(a: &[u8], b: &[u8], out: &mut [u8], f: impl Fn(Lane<W>, Lane<W>) -> Lane<W>) {
    for ((o, x), y) in out.chunks_exact_mut(W).zip(a.chunks_exact(W)).zip(b.chunks_exact(W)) {
        let r = f(Lane::<W>::load(x), Lane::<W>::load(y));
        r.store(o);
    }
}

/// Like [`lanes`], with the first operand and the result in the same buffer.
#[inline(always)]
fn lanes_in_place<const W: usize>(acc: &mut [u8], b: &[u8], f: impl Fn(Lane<W>, Lane<W>) -> Lane<W>) {
    for (x, y) in acc.chunks_exact_mut(W).zip(b.chunks_exact(W)) {
        let r = f(Lane::<W>::load(x), Lane::<W>::load(y));
        r.store(x);
    }
}

/// A `W`-byte little-endian unsigned integer.
#[derive(Clone, Copy)]
pub(super) struct Lane<const W: usize>(pub u64);

impl<const W: usize> Lane<W> {
    const MASK: u64 = if W == 8 { u64::MAX } else { (1u64 << (8 * W)) - 1 };
    const BITS: u32 = 8 * W as u32;

    #[inline(always)]
    pub fn load(bytes: &[u8]) -> Self {
        let mut buf = [0u8; 8];
        buf[..W].copy_from_slice(bytes);
        Lane(u64::from_le_bytes(buf))
    }

    #[inline(always)]
    pub fn store(self, out: &mut [u8]) {
        out.copy_from_slice(&self.0.to_le_bytes()[..W]);
    }

    #[inline(always)]
    fn wrapping_sub(self, other: Self) -> Self {
        Lane(self.0.wrapping_sub(other.0) & Self::MASK)
    }

    #[inline(always)]
    fn wrapping_add(self, other: Self) -> Self {
        Lane(self.0.wrapping_add(other.0) & Self::MASK)
    }

    /// `self - old`, zigzag-coded: what [`sub`] stores for one element.
    #[inline(always)]
    pub fn sub_from(self, old: Self) -> Self {
        self.wrapping_sub(old).zigzag()
    }

    /// Inverse of [`Lane::sub_from`]: `old + unzigzag(self)`.
    #[inline(always)]
    pub fn add_to(self, old: Self) -> Self {
        old.wrapping_add(self.unzigzag())
    }

    /// Zigzag: 0, -1, 1, -2, 2 ... become 0, 1, 2, 3, 4 ...
    #[inline(always)]
    fn zigzag(self) -> Self {
        let sign = (self.0 >> (Self::BITS - 1)) & 1;
        Lane(((self.0 << 1) & Self::MASK) ^ (sign.wrapping_neg() & Self::MASK))
    }

    #[inline(always)]
    fn unzigzag(self) -> Self {
        Lane((self.0 >> 1) ^ ((self.0 & 1).wrapping_neg() & Self::MASK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn sub_then_unsub_round_trips_every_width() {
        for width in [1, 2, 3, 4, 8] {
            let new = pseudo_random(width * 101, 1);
            let old = pseudo_random(width * 101, 2);
            let mut d = vec![0; new.len()];
            sub(&new, &old, width, &mut d);
            unsub(&mut d, &old, width);
            assert_eq!(d, new, "width {width}");
        }
    }

    #[test]
    fn small_moves_become_small_numbers() {
        // 1.0f32 and its neighbours one ulp up and one ulp down.
        let old = 1.0f32.to_bits();
        for (new, expected) in [(old + 1, 2u32), (old - 1, 1), (old, 0)] {
            let mut d = [0u8; 4];
            sub(&new.to_le_bytes(), &old.to_le_bytes(), 4, &mut d);
            assert_eq!(u32::from_le_bytes(d), expected);
        }
    }

    #[test]
    fn xor_is_its_own_inverse() {
        let new = pseudo_random(64, 3);
        let old = pseudo_random(64, 4);
        let mut d = vec![0; 64];
        xor(&new, &old, &mut d);
        unxor(&mut d, &old);
        assert_eq!(d, new);
    }
}
