//! The entropy stage for one byte plane: zstd where it shrinks the plane, raw bytes where not.

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

/// Compresses `plane` at zstd `level` and appends the result to `out`, or appends it raw when
/// compression does not save at least 1/64 of it. Returns the mode used.
pub fn compress(plane: &[u8], level: i32, out: &mut Vec<u8>) -> Mode {
    if plane.is_empty() {
        out.extend_from_slice(plane);
        return Mode::Raw;
    }
    let start = out.len();
    let bound = zstd::zstd_safe::compress_bound(plane.len());
    out.resize(start + bound, 0);
    let written = zstd::bulk::compress_to_buffer(plane, &mut out[start..], level)
        .expect("the output buffer holds zstd's compress bound");
    if written + plane.len() / 64 < plane.len() {
        out.truncate(start + written);
        Mode::Zstd
    } else {
        out.truncate(start);
        out.extend_from_slice(plane);
        Mode::Raw
    }
}

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
            let n = zstd::bulk::decompress_to_buffer(stored, out).map_err(|e| Error::Zstd(e.to_string()))?;
            if n == out.len() {
                Ok(())
            } else {
                Err(Error::Zstd(format!("{n} bytes, expected {}", out.len())))
            }
        }
    }
}
