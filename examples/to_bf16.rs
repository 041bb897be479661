//! Streaming fp32 -> bf16 converter for safetensors files (benches/codecs.sh).
//!
//! ```text
//! cargo run --release --example to_bf16 -- IN.safetensors OUT.safetensors
//! ```
//!
//! Writes OUT with the same tensors, in the same order, as IN: every `F32` tensor is rounded to
//! `BF16` (round to nearest, ties to even; a NaN stays a NaN, made quiet; values beyond the
//! largest bf16 round to infinity as IEEE rounding says), every tensor of another dtype is copied
//! byte for byte. The header keeps `__metadata__` and gets the new dtypes and data offsets; like
//! every safetensors writer it is padded with spaces to a multiple of 8 bytes, so that the data
//! section stays aligned. IN is validated first by the library's header reader (tensors must tile it).
//!
//! Memory stays bounded whatever the size: tensor data is read, converted and written in blocks
//! of `BLOCK` elements; only the header is held whole.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use sparse::model::safetensors::{self, dtype_name, read, Dtype, Header, NewTensor};

/// Elements per converted block.
const BLOCK: usize = 1 << 16;
/// I/O buffer size for reading and writing.
const IO_BUF: usize = 1 << 20;

type Error = Box<dyn std::error::Error>;

/// bf16 bits of `x`: round to nearest, ties to even; NaN kept as a quiet NaN of the same sign.
fn to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: keep the sign and the top of the payload, set the quiet bit.
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Add just under half an ulp of bf16, plus the lowest kept bit (ties go to even), and keep
    // the top half. Cannot overflow: the largest non-NaN input is 0xff80_0000 (-inf).
    let lsb = (bits >> 16) & 1;
    ((bits + 0x7fff + lsb) >> 16) as u16
}

/// The output header (8-byte length and JSON padded with spaces to a multiple of 8), with the
/// The output header: the input's tensors in file order with their new dtypes and offsets.
fn header_bytes(header: &Header) -> Vec<u8> {
    let dtypes: Vec<(String, u64)> = header
        .tensors
        .iter()
        .map(|t| match t.dtype {
            Dtype::F32 => ("BF16".to_string(), t.len() / 2),
            other => (dtype_name(other), t.len()),
        })
        .collect();
    let entries: Vec<NewTensor<'_>> = header
        .tensors
        .iter()
        .zip(&dtypes)
        .map(|(t, (dtype, len))| NewTensor {
            name: &t.name,
            dtype,
            shape: &t.shape,
            len: *len,
        })
        .collect();
    safetensors::header_bytes(&entries, header.metadata.as_ref())
}

/// Skips `n` bytes of `r` (bounded buffer).
fn skip(r: &mut impl Read, n: u64) -> Result<(), Error> {
    let skipped = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if skipped != n {
        return Err("input ends early".into());
    }
    Ok(())
}

fn convert(input: &Path, output: &Path) -> Result<(), Error> {
    // The library's reader validates the header: known dtypes, sizes that match the shapes,
    // and tensors that tile the data section exactly, in file order.
    let (header, _) = read(input)?;
    let mut r = BufReader::with_capacity(IO_BUF, File::open(input)?);
    skip(&mut r, header.len)?;

    let mut w = BufWriter::with_capacity(IO_BUF, File::create(output)?);
    let out_header = header_bytes(&header);
    w.write_all(&out_header)?;
    let mut total = out_header.len() as u64;

    let mut raw = vec![0u8; BLOCK * 4];
    let mut out = Vec::with_capacity(BLOCK * 2);
    let (mut converted, mut copied) = (0usize, 0usize);
    for t in &header.tensors {
        let mut left = t.len();
        if t.dtype != Dtype::F32 {
            let n = std::io::copy(&mut (&mut r).take(left), &mut w)?;
            if n != left {
                return Err("input ends early".into());
            }
            total += left;
            copied += 1;
            continue;
        }
        while left > 0 {
            let n = left.min((BLOCK * 4) as u64) as usize;
            r.read_exact(&mut raw[..n])?;
            out.clear();
            for b in raw[..n].chunks_exact(4) {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend_from_slice(&to_bf16_bits(x).to_le_bytes());
            }
            w.write_all(&out)?;
            total += out.len() as u64;
            left -= n as u64;
        }
        converted += 1;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    eprintln!(
        "wrote {} ({total} bytes: {converted} tensors F32 -> BF16, {copied} copied unchanged)",
        output.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: to_bf16 IN.safetensors OUT.safetensors");
        return ExitCode::from(2);
    };
    match convert(Path::new(input), Path::new(output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("to_bf16: {input}: {e}");
            ExitCode::FAILURE
        }
    }
}
