//! The entropy stage for one byte plane: zstd where it shrinks the plane, raw bytes where not.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

use super::Error;

/// How a plane's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Raw = 0,
    Zstd = 1,
}

impl Mode {
    pub fn from_byte(b: u8) -> Result<Self, Error> {
        match b {
            0 => Ok(Mode::Raw),
            1 => Ok(Mode::Zstd),
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

/// Compresses `plane` at zstd `level` and appends the result to `out`, or appends it raw when
/// compression does not save at least 1/64 of it. Returns the mode used.
pub fn compress(plane: &[u8], level: i32, out: &mut Vec<u8>) -> Mode {
    if plane.is_empty() || looks_random(plane) {
        out.extend_from_slice(plane);
        return Mode::Raw;
    }
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _, _)| *l != level) {
            let mut c = Compressor::new(level).expect("zstd accepts levels 1..=22");
            // Planes are mostly unpredictable bytes with a skewed distribution: short matches
            // there cost more than the literals they replace. Matches of 7 bytes or more (zstd's
            // longest minimum) made the real pair smaller at every level tried and coding faster
            // (docs/PERFORMANCE.md, "Chunk size and zstd level").
            c.set_parameter(zstd::zstd_safe::CParameter::MinMatch(7))
                .expect("zstd accepts a minimum match of 7");
            *slot = Some((level, c, Vec::new()));
        }
        let (_, compressor, buf) = slot.as_mut().expect("set above");
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound(plane.len()));
        let written = compressor
            .compress_to_buffer(plane, buf)
            .expect("the buffer holds zstd's compress bound");
        if written + plane.len() / 64 < plane.len() {
            out.extend_from_slice(buf);
            Mode::Zstd
        } else {
            out.extend_from_slice(plane);
            Mode::Raw
        }
    })
}

/// Whether the plane's order-0 entropy leaves no room for the 1/64 that zstd must save: the
/// low mantissa planes of floats, which make up most of a model's bytes. Counting bytes is
/// several times faster than letting zstd find out.
fn looks_random(plane: &[u8]) -> bool {
    // Four tables, so that runs of one byte value do not wait on one counter.
    let mut counts = [[0u32; 256]; 4];
    let (quads, rest) = plane.as_chunks::<4>();
    for q in quads {
        for (table, &b) in counts.iter_mut().zip(q) {
            table[b as usize] += 1;
        }
    }
    for &b in rest {
        counts[0][b as usize] += 1;
    }
    let n = plane.len() as f64;
    let bits: f64 = (0..256)
        .map(|b| counts.iter().map(|t| t[b]).sum::<u32>())
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits > RANDOM_BITS
}

/// Bits per byte above which a plane is stored raw without trying zstd: a plane at this
/// entropy could at best save 1/64 through matches of 7 bytes or more, which such planes lack.
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
