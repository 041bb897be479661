//! The entropy stage for one byte plane: rANS, zstd or raw bytes, whichever is smallest
//! ([`compress`]), or the one a sample of the chunk chose ([`compress_as`]).

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

use super::{rans, Error};

/// How a plane's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Raw = 0,
    Zstd = 1,
    /// Static rANS with a table per block ([`rans`]).
    Rans = 2,
}

impl Mode {
    pub fn from_byte(b: u8) -> Result<Self, Error> {
        match b {
            0 => Ok(Mode::Raw),
            1 => Ok(Mode::Zstd),
            2 => Ok(Mode::Rans),
            other => Err(Error::PlaneMode(other)),
        }
    }
}

thread_local! {
    /// zstd contexts and the compressed plane, reused by every plane coded on this thread:
    /// a fresh context per plane costs more than the plane itself.
    static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Codes `plane` and appends the result to `out`: as rANS or zstd, whichever is smaller, else
/// raw. Returns the mode used. rANS codes only the blocks that it shrinks by more than
/// 1/[`rans::MARGIN`], and zstd is kept only when it saves that much of the plane: raw bytes
/// cost nothing to decode. The byte histogram decides what is tried: rANS where its order-0
/// saving comes near the margin ([`rans::worth_trying`]; a table per block can beat the
/// plane's order-0 entropy), zstd where the entropy is low enough for its own coder to matter
/// ([`RANDOM_BITS`]); the near-random low mantissa planes of floats, most of a model's bytes,
/// are often neither.
pub fn compress(plane: &[u8], level: i32, out: &mut Vec<u8>) -> Mode {
    if plane.is_empty() {
        return Mode::Raw;
    }
    compress_counted(plane, &rans::pieces(plane), level, out)
}

/// [`compress`] of a non-empty plane whose [`rans::pieces`] are counted already.
fn compress_counted(plane: &[u8], pieces: &[[u32; 256]], level: i32, out: &mut Vec<u8>) -> Mode {
    let bits = rans::entropy_bits(&rans::total(pieces));
    let at = out.len();
    let mut best = (Mode::Raw, plane.len());
    if bits <= RANDOM_BITS {
        if let Some(n) = zstd_if_it_saves(plane, level, out) {
            best = (Mode::Zstd, n);
        }
    }
    // rANS's size is known from byte counts before coding: code only when it wins, over zstd
    // by a further 1/ZSTD_MARGIN of the plane.
    let bar = match best.0 {
        Mode::Zstd => best.1.saturating_sub(plane.len() / ZSTD_MARGIN),
        _ => best.1,
    };
    if rans::worth_trying(plane.len(), bits, rans::MARGIN * 8) {
        let plan = rans::Plan::from_pieces(pieces);
        if plan.bytes() < bar {
            let mut coded = Vec::with_capacity(plan.bytes() + 64);
            plan.encode(plane, &mut coded);
            if coded.len() < bar {
                out.truncate(at);
                out.extend_from_slice(&coded);
                best = (Mode::Rans, coded.len());
            }
        }
    }
    if best.0 == Mode::Raw {
        debug_assert_eq!(out.len(), at, "nothing was kept");
        out.extend_from_slice(plane);
    }
    best.0
}

/// Codes `plane` with the coder `hint` names, the one [`compress`] chose for a sample of the
/// same plane (the start of the chunk), instead of trying each: raw, zstd or rANS, each kept
/// on the terms [`compress`] keeps it (zstd where it saves 1/[`rans::MARGIN`], rANS where it
/// is smaller than the plane), else raw. A sample can be unlike the rest (the first rows of a
/// vocabulary's embedding are special and unused tokens), and a repetitive plane costs rANS
/// most against zstd: where rANS is hinted for a plane of at least four [`PROBE`]s, zstd codes
/// two `PROBE`-byte pieces of it first, and if they come out smaller than the rANS plan's rate
/// by a tenth, both coders are tried. Raw and zstd hints are not checked: that would take the
/// plane's byte counts, much of what hinting saves. Coding the chunks of a fine-tune
/// with its sample's coders took from a quarter (the real pairs) to three fifths (the
/// generated family) off `add`'s coding; stored sizes were the same, or 0.4% larger on the
/// bf16 pair (docs/PERFORMANCE.md).
pub fn compress_as(plane: &[u8], level: i32, hint: Mode, out: &mut Vec<u8>) -> Mode {
    let kept = match hint {
        Mode::Raw => false,
        Mode::Zstd => zstd_if_it_saves(plane, level, out).is_some(),
        Mode::Rans => {
            let pieces = rans::pieces(plane);
            let plan = rans::Plan::from_pieces(&pieces);
            if plane.len() >= 4 * PROBE {
                let starts = [plane.len() / 4, plane.len() * 3 / 4 - PROBE];
                let probed: usize = starts
                    .iter()
                    .map(|&at| zstd(&plane[at..at + PROBE], level, <[u8]>::len))
                    .sum();
                let rans_rate = plan.bytes() as f64 / plane.len() as f64;
                if (probed as f64) < 0.9 * rans_rate * (2 * PROBE) as f64 {
                    return compress_counted(plane, &pieces, level, out);
                }
            }
            let at = out.len();
            if plan.bytes() < plane.len() {
                plan.encode(plane, out);
            }
            let kept = out.len() > at && out.len() - at < plane.len();
            if !kept {
                out.truncate(at);
            }
            kept
        }
    };
    match kept {
        true => hint,
        false => {
            out.extend_from_slice(plane);
            Mode::Raw
        }
    }
}

/// Appends `plane` coded by zstd to `out` where that saves 1/[`rans::MARGIN`] of it (less is
/// not worth decoding), and returns the coded length; else leaves `out` as it was.
fn zstd_if_it_saves(plane: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
    zstd(plane, level, |frame| {
        let saves = frame.len() + plane.len() / rans::MARGIN < plane.len();
        saves.then(|| {
            out.extend_from_slice(frame);
            frame.len()
        })
    })
}

/// Bytes of each piece of a plane that zstd codes to check a hint of rANS ([`compress_as`]).
const PROBE: usize = 8 << 10;

/// Codes `plane` with this thread's zstd context at `level` and hands the frame to `f`.
fn zstd<R>(plane: &[u8], level: i32, f: impl FnOnce(&[u8]) -> R) -> R {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _, _)| *l != level) {
            let mut c = Compressor::new(level).expect("zstd accepts levels 1..=22");
            // Planes are mostly unpredictable bytes with a skewed distribution: short matches
            // there cost more than the literals they replace. Matches of 7 bytes or more
            // (zstd's longest minimum) made the real pair smaller at every level tried and
            // coding faster (docs/PERFORMANCE.md, "Chunk size and zstd level").
            c.set_parameter(zstd::zstd_safe::CParameter::MinMatch(7))
                .expect("zstd accepts a minimum match of 7");
            *slot = Some((level, c, Vec::new()));
        }
        let (_, compressor, buf) = slot.as_mut().expect("set above");
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound(plane.len()));
        compressor
            .compress_to_buffer(plane, buf)
            .expect("the buffer holds zstd's compress bound");
        f(buf)
    })
}

/// rANS decodes at a fixed cost per byte, zstd far faster where a plane is mostly one value
/// (the planes of a fine-tune that changed few elements): on such planes rANS must save
/// 1/ZSTD_MARGIN of the plane's bytes over zstd to be kept. On the real MiniLM pair no plane
/// is that close, and nothing changed; on the generated 7B-shaped family (0.4% of elements
/// changed) zstd planes decoded 3x faster than rANS for 1.6x the (tiny) size
/// (docs/PERFORMANCE.md, "GPU checkout").
const ZSTD_MARGIN: usize = 128;

/// Bits per byte above which zstd is not tried: at this entropy its Huffman-coded literals
/// cannot beat rANS, and such planes lack matches of 7 bytes or more.
const RANDOM_BITS: f64 = 8.0 * (1.0 - 1.0 / 64.0);

/// Decodes a stored plane into `out`, which has the plane's exact decoded length. A zstd frame
/// that would decode to more or fewer bytes is refused (no decompression bombs).
pub fn decompress(mode: Mode, stored: &[u8], out: &mut [u8]) -> Result<(), Error> {
    match mode {
        Mode::Raw if stored.len() == out.len() => {
            out.copy_from_slice(stored);
            Ok(())
        }
        Mode::Raw => Err(Error::Length {
            found: stored.len() as u64,
            expected: out.len(),
        }),
        Mode::Rans => rans::decode(stored, out),
        Mode::Zstd => {
            let n = DECOMPRESSOR.with_borrow_mut(|slot| {
                let d = match slot {
                    Some(d) => d,
                    None => slot.insert(Decompressor::new().map_err(|e| Error::Zstd(e.to_string()))?),
                };
                d.decompress_to_buffer(stored, out)
                    .map_err(|e| Error::Zstd(e.to_string()))
            })?;
            if n == out.len() {
                Ok(())
            } else {
                Err(Error::Zstd(format!("{n} bytes, expected {}", out.len())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(plane: &[u8]) -> (Mode, usize) {
        let mut out = Vec::new();
        let mode = compress(plane, 1, &mut out);
        let mut back = vec![0; plane.len()];
        decompress(mode, &out, &mut back).unwrap();
        assert_eq!(back, plane, "{mode:?}");
        (mode, out.len())
    }

    #[test]
    fn each_mode_is_chosen_where_it_is_smallest() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let noise: Vec<u8> = (0..200_000).map(|_| next() as u8).collect();
        assert_eq!(coded(&noise), (Mode::Raw, noise.len()));
        // Skewed without repeats: an exponent plane.
        let skewed: Vec<u8> = (0..200_000)
            .map(|_| 120 + (next() as u32).trailing_zeros() as u8)
            .collect();
        assert_eq!(coded(&skewed).0, Mode::Rans);
        // Long runs of zeros with a few values between: the delta plane of a fine-tune.
        let runs: Vec<u8> = (0..200_000)
            .map(|i| if (i / 1000) % 10 == 0 { next() as u8 } else { 0 })
            .collect();
        assert_eq!(coded(&runs).0, Mode::Zstd);
        assert_eq!(coded(&[]), (Mode::Raw, 0));
    }

    #[test]
    fn a_hint_names_the_coder_unless_it_saves_nothing_or_a_probe_disagrees() {
        let mut next = crate::codec::test_rng(21);
        let as_hinted = |plane: &[u8], hint: Mode| {
            let mut out = Vec::new();
            let mode = compress_as(plane, 1, hint, &mut out);
            let mut back = vec![0; plane.len()];
            decompress(mode, &out, &mut back).unwrap();
            assert_eq!(back, plane, "{hint:?} gave {mode:?}");
            mode
        };
        let noise: Vec<u8> = (0..100_000).map(|_| next() as u8).collect();
        let skewed: Vec<u8> = (0..100_000).map(|_| 120 + next().trailing_zeros() as u8).collect();
        // Each coder where hinted, even where the other would be smaller.
        assert_eq!(coded(&skewed).0, Mode::Rans, "left to itself, rANS wins here");
        assert_eq!(as_hinted(&skewed, Mode::Zstd), Mode::Zstd);
        assert_eq!(as_hinted(&skewed, Mode::Rans), Mode::Rans);
        assert_eq!(as_hinted(&skewed, Mode::Raw), Mode::Raw);
        // A hinted coder that saves nothing: raw.
        assert_eq!(as_hinted(&noise, Mode::Zstd), Mode::Raw);
        assert_eq!(as_hinted(&noise, Mode::Rans), Mode::Raw);
        // rANS hinted for a plane of long runs (its sample had none): zstd's probe codes the
        // plane's pieces far smaller than rANS would, and both coders are tried.
        let runs: Vec<u8> = (0..100_000)
            .map(|i| if (i / 1000) % 10 == 0 { next() as u8 } else { 0 })
            .collect();
        assert_eq!(as_hinted(&runs, Mode::Rans), Mode::Zstd);
        assert_eq!(as_hinted(&[], Mode::Rans), Mode::Raw);
    }
}
