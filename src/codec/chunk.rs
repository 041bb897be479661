//! The byte layout of one coded chunk (docs/FORMAT.md, "Coded chunk"): one or more blocks
//! back to back, each coding the next `n` bytes of the chunk against the same bytes of the
//! parent. A block:
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 1
//! 1       1     transform: 0 full, 1 xor, 2 sub, 3 sub grouped by the parent's context
//! 2       1     element width w in bytes (1..=255); the block has w planes
//! 3       1     context bits k for transform 3 (1..=16; see codec::context), else 0
//! 4       8     decoded length n, little-endian; a multiple of w
//! then w times: 1 byte plane mode (0 raw, 1 zstd, 2 rANS), 8 bytes stored length m (LE), m bytes
//! ```
//! Plane k holds byte k of each element of the transformed block (n / w bytes decoded).
//!
//! Every step of decoding (planes, their join, the ungrouping, the parent) runs over a whole
//! block before the next step starts, so a block is what must stay in a core's cache: chunks
//! are cut into blocks of [`BLOCK`] bytes, while a chunk (what is hashed, stored as one blob
//! and named in manifests) stays large, so that a model is not thousands more files.

use std::cell::RefCell;

use super::{context, delta, entropy, planes, rans, Codec, Error};

const VERSION: u8 = 1;
const HEADER: usize = 12;

/// Bytes per block (rounded down to whole elements). On the real fp32 pair, checkout took 173
/// ms of CPU with one block per 4 MiB chunk and 128 with 1 MiB blocks (docs/ARCHITECTURE.md).
pub const BLOCK: usize = 1 << 20;

/// The most blocks a chunk may have (a chunk is at most 256 MiB): each block costs a decoder
/// its bookkeeping (a table of 2^k buckets for `subctx`, a job on a device), so a chunk cut
/// into many tiny blocks would cost far more to decode than its bytes.
pub const MAX_BLOCKS: usize = 256;

thread_local! {
    /// Buffers reused by every chunk coded on this thread (a fresh buffer per chunk costs a
    /// page fault per page): the transformed chunk and its planes. They only ever grow, and
    /// each use overwrites the part it reads, so they are never cleared.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The first `n` bytes of `buf`, grown (never shrunk or cleared) to hold them.
fn at_least(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}

/// How a chunk's bytes are turned into what the planes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Full,
    Xor,
    Sub,
    /// `Sub`, with the differences grouped by `bits` context bits of the parent's elements.
    SubCtx {
        bits: u8,
    },
}

impl Transform {
    pub fn codec(self) -> Codec {
        match self {
            Transform::Full => Codec::Full,
            Transform::Xor => Codec::Xor,
            Transform::Sub => Codec::Sub,
            Transform::SubCtx { .. } => Codec::SubCtx,
        }
    }

    fn bytes(self) -> [u8; 2] {
        match self {
            Transform::Full => [0, 0],
            Transform::Xor => [1, 0],
            Transform::Sub => [2, 0],
            Transform::SubCtx { bits } => [3, bits],
        }
    }

    fn from_bytes(t: u8, bits: u8, width: usize) -> Result<Self, Error> {
        match (t, bits) {
            (0, 0) => Ok(Transform::Full),
            (1, 0) => Ok(Transform::Xor),
            (2, 0) => Ok(Transform::Sub),
            // The context bits follow the sign bit, so they fit in an element.
            (3, b)
                if matches!(width, 2 | 4 | 8)
                    && (1..=context::MAX_BITS).contains(&u32::from(b))
                    && u32::from(b) < 8 * width as u32 =>
            {
                Ok(Transform::SubCtx { bits: b })
            }
            _ => Err(Error::Transform(t)),
        }
    }
}

/// Codes `data` with `transform` against `parent` (needed by all but `Full`), in blocks of
/// [`BLOCK`] bytes each split into `width`-byte planes compressed at zstd `level`.
pub fn encode(transform: Transform, data: &[u8], parent: Option<&[u8]>, width: usize, level: i32) -> Vec<u8> {
    encode_blocks(transform, data, parent, width, level, BLOCK, None)
}

/// [`encode`], each block's plane `k` coded with the entropy coder `hints[k]` names
/// ([`entropy::compress_as`]) instead of trying each: the coders a sample of the chunk chose
/// ([`plane_modes`]). Panics unless there is a hint per plane (`width` of them).
pub fn encode_as(
    transform: Transform,
    data: &[u8],
    parent: Option<&[u8]>,
    width: usize,
    level: i32,
    hints: &[entropy::Mode],
) -> Vec<u8> {
    assert_eq!(hints.len(), width, "a hint per plane");
    encode_blocks(transform, data, parent, width, level, BLOCK, Some(hints))
}

/// The entropy coder of each plane of the first block of coded chunk `coded`, whose elements
/// are `width` bytes; `None` if it does not parse.
pub fn plane_modes(coded: &[u8], width: usize) -> Option<Vec<entropy::Mode>> {
    let (block, _) = parse_block(coded, width, usize::MAX).ok()?;
    Some(block.planes.iter().map(|&(mode, _)| mode).collect())
}

/// [`encode`] with blocks of `block` bytes (rounded down to whole elements, at least one), or
/// larger where that would make more than [`MAX_BLOCKS`], and with [`encode_as`]'s hints
/// where given.
pub fn encode_blocks(
    transform: Transform,
    data: &[u8],
    parent: Option<&[u8]>,
    width: usize,
    level: i32,
    block: usize,
    hints: Option<&[entropy::Mode]>,
) -> Vec<u8> {
    assert!(
        (1..=255).contains(&width) && data.len().is_multiple_of(width),
        "whole elements"
    );
    if let Some(p) = parent {
        assert_eq!(p.len(), data.len(), "a parent chunk of the same length");
    }
    let fewest = data.len().div_ceil(MAX_BLOCKS).div_ceil(width) * width;
    let block = ((block / width).max(1) * width).max(fewest);
    let mut out = Vec::with_capacity(HEADER + data.len() / 2);
    let mut at = 0;
    loop {
        let end = (at + block).min(data.len());
        let parent = parent.map(|p| &p[at..end]);
        encode_block(transform, &data[at..end], parent, width, level, hints, &mut out);
        at = end;
        if at == data.len() {
            return out;
        }
    }
}

/// Appends one block coding `data` to `out`, its planes coded as `hints` say, if given.
fn encode_block(
    transform: Transform,
    data: &[u8],
    parent: Option<&[u8]>,
    width: usize,
    level: i32,
    hints: Option<&[entropy::Mode]>,
    out: &mut Vec<u8>,
) {
    let n = data.len();
    let [t, bits] = transform.bytes();
    out.extend_from_slice(&[VERSION, t, width as u8, bits]);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    SCRATCH.with_borrow_mut(|(transformed, split)| {
        let source: &[u8] = match (transform, parent) {
            (Transform::Full, _) => data,
            (Transform::Xor, Some(p)) => {
                let t = at_least(transformed, n);
                delta::xor(data, p, t);
                t
            }
            (Transform::Sub, Some(p)) => {
                let t = at_least(transformed, n);
                delta::sub(data, p, width, t);
                t
            }
            (Transform::SubCtx { bits }, Some(p)) => {
                let t = at_least(transformed, n);
                context::group_sub(data, p, width, u32::from(bits), t);
                t
            }
            (t, None) => panic!("{t:?} needs a parent chunk of the same length"),
        };
        let split = at_least(split, n);
        planes::split(source, width, split);
        let plane_len = n / width;
        for k in 0..width {
            let plane = &split[k * plane_len..(k + 1) * plane_len];
            let at = out.len();
            out.extend_from_slice(&[0u8; 9]);
            let mode = match hints {
                Some(h) => entropy::compress_as(plane, level, h[k], out),
                None => entropy::compress(plane, level, out),
            };
            let stored = (out.len() - at - 9) as u64;
            out[at] = mode as u8;
            out[at + 1..at + 9].copy_from_slice(&stored.to_le_bytes());
        }
    });
}
/// A coded block's header, checked, and its stored planes.
struct Parsed<'a> {
    transform: Transform,
    /// Bytes the block decodes to.
    n: usize,
    /// Each plane's mode and stored bytes.
    planes: Vec<(entropy::Mode, &'a [u8])>,
}

/// Parses the blocks of coded chunk `coded` against the element `width` and the chunk's
/// decoded length `len`: every length is checked, and the blocks must decode to exactly `len`
/// bytes, before anything is decompressed. A chunk of no bytes is one empty block.
fn parse(coded: &[u8], width: usize, len: usize) -> Result<Vec<Parsed<'_>>, Error> {
    let mut blocks = Vec::with_capacity(len.div_ceil(BLOCK).clamp(1, MAX_BLOCKS));
    let (mut rest, mut decoded) = (coded, 0);
    loop {
        if blocks.len() == MAX_BLOCKS {
            return Err(Error::Blocks(MAX_BLOCKS));
        }
        let (block, tail) = parse_block(rest, width, len - decoded)?;
        decoded += block.n;
        blocks.push(block);
        rest = tail;
        match (decoded == len, rest.is_empty()) {
            (true, true) => return Ok(blocks),
            (true, false) => return Err(Error::Trailing(rest.len())),
            // Only the last block may be empty: it is the whole of an empty chunk.
            (false, _) if blocks.last().is_some_and(|b| b.n == 0) || rest.is_empty() => {
                return Err(Error::Length {
                    found: decoded as u64,
                    expected: len,
                })
            }
            (false, _) => {}
        }
    }
}

/// Checks the header of the block at the start of `coded` against the element `width` and
/// the bytes left to decode, `room`, and finds its planes. Returns the block and what follows.
fn parse_block(coded: &[u8], width: usize, room: usize) -> Result<(Parsed<'_>, &[u8]), Error> {
    let header = coded.get(..HEADER).ok_or(Error::Truncated)?;
    if header[0] != VERSION {
        return Err(Error::Version(header[0]));
    }
    if header[2] as usize != width {
        return Err(Error::Width {
            width: header[2] as usize,
            expected: width,
        });
    }
    let transform = Transform::from_bytes(header[1], header[3], width)?;
    let found = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
    let n = usize::try_from(found)
        .ok()
        .filter(|&n| n <= room && n.is_multiple_of(width))
        .ok_or(Error::Length { found, expected: room })?;
    let mut planes = Vec::with_capacity(width);
    let mut rest = &coded[HEADER..];
    for _ in 0..width {
        if rest.len() < 9 {
            return Err(Error::Truncated);
        }
        let mode = entropy::Mode::from_byte(rest[0])?;
        let m = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
        let m = usize::try_from(m)
            .ok()
            .filter(|&m| m <= rest.len() - 9)
            .ok_or(Error::Truncated)?;
        planes.push((mode, &rest[9..9 + m]));
        rest = &rest[9 + m..];
    }
    Ok((Parsed { transform, n, planes }, rest))
}

/// The transform every block of a chunk shares: a chunk has one codec.
fn shared_transform(blocks: &[Parsed<'_>]) -> Result<Transform, Error> {
    let first = blocks.first().expect("a chunk has at least one block").transform;
    match blocks.iter().find(|b| b.transform != first) {
        Some(other) => Err(Error::Transform(other.transform.bytes()[0])),
        None => Ok(first),
    }
}

/// Decodes a coded chunk into `out` (its exact decoded length), using `parent` for deltas.
/// Returns the chunk's codec. Every length is checked against `out` before anything is
/// decompressed, so a hostile chunk cannot make this allocate more than `out`.
pub fn decode(coded: &[u8], parent: Option<&[u8]>, width: usize, out: &mut [u8]) -> Result<Codec, Error> {
    let blocks = parse(coded, width, out.len())?;
    let codec = shared_transform(&blocks)?.codec();
    let parent = match (codec.needs_parent(), parent) {
        (false, _) => None,
        (true, Some(p)) if p.len() == out.len() => Some(p),
        (true, Some(p)) => {
            return Err(Error::Length {
                found: p.len() as u64,
                expected: out.len(),
            })
        }
        (true, None) => return Err(Error::MissingParent),
    };
    SCRATCH.with_borrow_mut(|(grouped, split)| {
        // The entropy stage of every block at once, so that all their rANS blocks advance
        // side by side: eight in a chunk of bf16 deltas, where a block has only one rANS
        // plane of two blocks (checkout of the generated family: a third less CPU). Decoding
        // it a block at a time, for its planes to be still in cache when joined, was no
        // faster on the fp32 pair, whose blocks have more.
        let split = at_least(split, out.len());
        decode_entropy(&blocks, width, split, false)?;
        let mut at = 0;
        for block in &blocks {
            let (out, parent) = (&mut out[at..at + block.n], parent.map(|p| &p[at..at + block.n]));
            decode_block(block, &split[at..at + block.n], parent, width, out, grouped);
            at += block.n;
        }
        Ok(codec)
    })
}

/// Turns one parsed block, its entropy stage decoded into `split` (its planes one after
/// another, as [`decode_entropy`] leaves them), into `out` (its length), against `parent` if
/// its transform needs one. Raw planes are read where they lie in the coded chunk. A `subctx`
/// block is joined into `grouped` first.
fn decode_block(
    block: &Parsed<'_>,
    split: &[u8],
    parent: Option<&[u8]>,
    width: usize,
    out: &mut [u8],
    grouped: &mut Vec<u8>,
) {
    let (n, plane_len) = (block.n, block.n / width);
    let planes: Vec<&[u8]> = (block.planes.iter().enumerate())
        .map(|(k, &(mode, bytes))| match mode {
            entropy::Mode::Raw => bytes,
            _ => &split[k * plane_len..(k + 1) * plane_len],
        })
        .collect();
    match (block.transform, parent) {
        (Transform::SubCtx { bits }, Some(p)) => {
            let grouped = at_least(grouped, n);
            planes::join(&planes, grouped);
            context::ungroup_add(grouped, p, width, u32::from(bits), out);
        }
        (Transform::Sub, Some(p)) => {
            planes::join(&planes, out);
            delta::unsub(out, p, width);
        }
        (Transform::Xor, Some(p)) => {
            planes::join(&planes, out);
            delta::unxor(out, p);
        }
        _ => planes::join(&planes, out),
    }
}

/// The entropy stage of `blocks`: decodes each block's planes into `planes` (the blocks' exact
/// decoded length), block `i`'s where the block lies among them, its plane `k` at `k` times
/// its plane length from there. The rANS planes of all the blocks decode together
/// ([`rans::decode_many`]). Raw planes are copied only when `copy_raw`: a reader that takes
/// them where they lie in the coded chunk saves the copy.
fn decode_entropy(blocks: &[Parsed<'_>], width: usize, planes: &mut [u8], copy_raw: bool) -> Result<(), Error> {
    let mut coded_rans = Vec::new();
    let mut rest = planes;
    for block in blocks {
        let plane_len = block.n / width;
        for &(mode, bytes) in &block.planes {
            let (plane, after) = std::mem::take(&mut rest).split_at_mut(plane_len);
            rest = after;
            match mode {
                entropy::Mode::Raw if !copy_raw && bytes.len() == plane_len => {}
                entropy::Mode::Rans => coded_rans.push((bytes, plane)),
                _ => entropy::decompress(mode, bytes, plane)?,
            }
        }
    }
    rans::decode_many(coded_rans)
}

/// The entropy stage of [`decode`] alone: writes each block's byte planes, one after another,
/// into `planes` (the chunk's exact decoded length), so that block `i`'s planes take the
/// bytes where the block lies in the chunk. Returns the transform that turns them back into
/// the chunk given its parent and the length of each block: this is what a device applies on
/// its side, block by block.
pub fn decode_planes(coded: &[u8], width: usize, planes: &mut [u8]) -> Result<(Transform, Vec<usize>), Error> {
    let blocks = parse(coded, width, planes.len())?;
    let transform = shared_transform(&blocks)?;
    decode_entropy(&blocks, width, planes, true)?;
    Ok((transform, blocks.iter().map(|b| b.n).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(seed: u32, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((i as f32 * 0.37 + seed as f32).sin() * 0.02).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let old = floats(0, 1000);
        let new: Vec<u8> = old
            .chunks_exact(4)
            .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * 0.999).to_le_bytes())
            .collect();
        let transforms = [
            Transform::Full,
            Transform::Xor,
            Transform::Sub,
            Transform::SubCtx { bits: 8 },
            Transform::SubCtx { bits: 11 },
        ];
        for t in transforms {
            let coded = encode(t, &new, Some(&old), 4, 3);
            let mut out = vec![0; new.len()];
            assert_eq!(decode(&coded, Some(&old), 4, &mut out).unwrap(), t.codec());
            assert_eq!(out, new, "{t:?}");
        }
    }

    #[test]
    fn planes_are_what_the_transform_splits() {
        let old = floats(2, 300);
        let new = floats(3, 300);
        let t = Transform::SubCtx { bits: 8 };
        let coded = encode(t, &new, Some(&old), 4, 3);
        let mut planes = vec![0; new.len()];
        assert_eq!(decode_planes(&coded, 4, &mut planes).unwrap(), (t, vec![new.len()]));
        let mut grouped = vec![0; new.len()];
        context::group_sub(&new, &old, 4, 8, &mut grouped);
        let mut expected = vec![0; new.len()];
        planes::split(&grouped, 4, &mut expected);
        assert_eq!(planes, expected);
        let mut short = vec![0; new.len() - 4];
        assert!(decode_planes(&coded, 4, &mut short).is_err(), "wrong length");
    }

    #[test]
    fn chunks_in_blocks_round_trip_and_give_each_blocks_planes() {
        let old = floats(4, 1001);
        let new: Vec<u8> = old
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, b)| (u32::from_le_bytes(b.try_into().unwrap()) + (i % 7) as u32).to_le_bytes())
            .collect();
        for t in [
            Transform::Full,
            Transform::Xor,
            Transform::Sub,
            Transform::SubCtx { bits: 11 },
        ] {
            // 1001 elements in blocks of 250 (1000 bytes, and 1002 rounded down): 4 whole, 1 of 1.
            for block in [1000, 1002] {
                let coded = encode_blocks(t, &new, Some(&old), 4, 3, block, None);
                let mut out = vec![0; new.len()];
                assert_eq!(decode(&coded, Some(&old), 4, &mut out).unwrap(), t.codec());
                assert_eq!(out, new, "{t:?}");
                let mut planes = vec![0; new.len()];
                let (got, lens) = decode_planes(&coded, 4, &mut planes).unwrap();
                assert_eq!((got, lens), (t, vec![1000, 1000, 1000, 1000, 4]));
                // Each block's planes are those of the block coded on its own.
                let second = encode(t, &new[1000..2000], Some(&old[1000..2000]), 4, 3);
                let mut alone = vec![0; 1000];
                decode_planes(&second, 4, &mut alone).unwrap();
                assert_eq!(planes[1000..2000], alone[..]);
            }
        }
    }

    #[test]
    fn blocks_that_do_not_tile_the_chunk_are_refused() {
        let data = floats(5, 300);
        let parent = floats(6, 300);
        let whole = encode_blocks(Transform::Sub, &data, Some(&parent), 4, 3, 400, None);
        let first = encode(Transform::Sub, &data[..400], Some(&parent[..400]), 4, 3);
        let mut out = vec![0; data.len()];
        // Blocks missing at the end, or cut between two blocks.
        assert!(matches!(
            decode(&first, Some(&parent), 4, &mut out),
            Err(Error::Length { .. })
        ));
        assert!(decode(&whole[..first.len() + 3], Some(&parent), 4, &mut out).is_err());
        // A block longer than what is left of the chunk.
        let long = [first.clone(), encode(Transform::Sub, &data, Some(&parent), 4, 3)].concat();
        assert!(matches!(
            decode(&long, Some(&parent), 4, &mut out),
            Err(Error::Length { .. })
        ));
        // An empty block before the end, which would otherwise repeat for ever.
        let empty = encode(Transform::Sub, &[], Some(&[]), 4, 3);
        let stalled = [first.clone(), empty.clone(), whole[first.len()..].to_vec()].concat();
        assert!(matches!(
            decode(&stalled, Some(&parent), 4, &mut out),
            Err(Error::Length { .. })
        ));
        // Blocks with different transforms: a chunk has one codec.
        let mixed = [
            first,
            encode_blocks(Transform::Xor, &data[400..], Some(&parent[400..]), 4, 3, 400, None),
        ]
        .concat();
        assert!(matches!(
            decode(&mixed, Some(&parent), 4, &mut out),
            Err(Error::Transform(1))
        ));
        // The blocks as coded decode.
        decode(&whole, Some(&parent), 4, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_chunk_has_at_most_max_blocks() {
        let data = floats(7, MAX_BLOCKS + 1);
        let parent = floats(8, MAX_BLOCKS + 1);
        // Asked for one element per block, the writer makes blocks of two: 129 of them.
        let coded = encode_blocks(Transform::SubCtx { bits: 11 }, &data, Some(&parent), 4, 3, 4, None);
        let mut planes = vec![0; data.len()];
        let (_, lens) = decode_planes(&coded, 4, &mut planes).unwrap();
        assert_eq!(lens.len(), MAX_BLOCKS.div_ceil(2) + 1);
        let mut out = vec![0; data.len()];
        decode(&coded, Some(&parent), 4, &mut out).unwrap();
        assert_eq!(out, data);
        // One element per block, written by hand: one block too many is refused.
        let hostile: Vec<u8> = data
            .chunks_exact(4)
            .zip(parent.chunks_exact(4))
            .flat_map(|(d, p)| encode(Transform::SubCtx { bits: 16 }, d, Some(p), 4, 3))
            .collect();
        assert!(matches!(
            decode(&hostile, Some(&parent), 4, &mut out),
            Err(Error::Blocks(MAX_BLOCKS))
        ));
        assert!(matches!(
            decode_planes(&hostile, 4, &mut planes),
            Err(Error::Blocks(MAX_BLOCKS))
        ));
        let fits = &hostile[..hostile.len() / (MAX_BLOCKS + 1) * MAX_BLOCKS];
        let mut shorter = vec![0; 4 * MAX_BLOCKS];
        decode(fits, Some(&parent[..4 * MAX_BLOCKS]), 4, &mut shorter).unwrap();
        assert_eq!(shorter, data[..4 * MAX_BLOCKS]);
    }

    #[test]
    fn hinted_chunks_round_trip_and_give_their_planes_modes() {
        let old = floats(9, 300_000);
        let new: Vec<u8> = old
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, b)| (u32::from_le_bytes(b.try_into().unwrap()) + (i % 5 == 0) as u32).to_le_bytes())
            .collect();
        let free = encode(Transform::Sub, &new, Some(&old), 4, 3);
        let modes = plane_modes(&free, 4).expect("parses");
        assert_eq!(modes.len(), 4);
        for hints in [modes.clone(), vec![entropy::Mode::Raw; 4], vec![entropy::Mode::Rans; 4]] {
            let coded = encode_as(Transform::Sub, &new, Some(&old), 4, 3, &hints);
            let mut back = vec![0u8; new.len()];
            assert_eq!(decode(&coded, Some(&old), 4, &mut back).unwrap(), Codec::Sub);
            assert_eq!(back, new, "{hints:?}");
            let found = plane_modes(&coded, 4).expect("parses");
            if hints == modes {
                assert_eq!(found, modes, "the free coding's coders, hinted, are kept");
            }
            if hints.iter().all(|&m| m == entropy::Mode::Raw) {
                assert!(coded.len() >= free.len(), "raw planes are no smaller");
                assert!(found.iter().all(|&m| m == entropy::Mode::Raw));
            }
        }
        assert!(plane_modes(&free[..5], 4).is_none(), "a truncated header");
    }

    #[test]
    fn empty_chunk_round_trips() {
        let coded = encode(Transform::Full, &[], None, 2, 3);
        let mut out = [];
        decode(&coded, None, 2, &mut out).unwrap();
    }

    #[test]
    fn truncated_or_altered_chunks_are_refused() {
        let data = floats(1, 500);
        let coded = encode(Transform::Full, &data, None, 4, 3);
        let mut out = vec![0; data.len()];
        for cut in [0, 5, HEADER, HEADER + 4, coded.len() - 1] {
            assert!(decode(&coded[..cut], None, 4, &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = coded.clone();
        longer.push(0);
        assert!(matches!(decode(&longer, None, 4, &mut out), Err(Error::Trailing(1))));
        assert!(decode(&coded, None, 2, &mut out).is_err(), "wrong width");
        let mut short = vec![0; data.len() - 4];
        assert!(decode(&coded, None, 4, &mut short).is_err(), "wrong length");
        // A context wider than the bits after a 2-byte element's sign.
        let mut wide = encode(Transform::SubCtx { bits: 8 }, &data[..400], Some(&data[400..800]), 2, 3);
        wide[3] = 16;
        let mut out2 = vec![0; 400];
        assert!(matches!(
            decode(&wide, Some(&data[400..800]), 2, &mut out2),
            Err(Error::Transform(3))
        ));
        let delta = encode(Transform::Sub, &data, Some(&data), 4, 3);
        assert!(matches!(decode(&delta, None, 4, &mut out), Err(Error::MissingParent)));
    }
}
