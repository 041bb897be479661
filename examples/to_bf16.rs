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
//! section stays aligned. Bytes between tensors in IN (there should be none) are dropped.
//!
//! Memory stays bounded whatever the size: tensor data is read, converted and written in blocks
//! of `BLOCK` elements; only the header is held whole.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// Elements per converted block.
const BLOCK: usize = 1 << 16;
/// I/O buffer size for reading and writing.
const IO_BUF: usize = 1 << 20;
/// Largest header accepted (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

type Error = Box<dyn std::error::Error>;

/// One tensor of the input header.
struct Tensor {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

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

fn parse_header(json: &[u8]) -> Result<(Option<serde_json::Value>, Vec<Tensor>), Error> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)?;
    let mut metadata = None;
    let mut tensors = Vec::new();
    for (name, v) in map {
        if name == "__metadata__" {
            metadata = Some(v);
            continue;
        }
        let bad = || format!("tensor {name:?}: malformed header entry");
        let dtype = v["dtype"].as_str().ok_or_else(bad)?.to_string();
        let shape = v["shape"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|d| d.as_u64().ok_or_else(bad))
            .collect::<Result<Vec<u64>, _>>()?;
        let offsets = v["data_offsets"].as_array().ok_or_else(bad)?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (b.as_u64().ok_or_else(bad)?, e.as_u64().ok_or_else(bad)?),
            _ => return Err(bad().into()),
        };
        if end < begin {
            return Err(bad().into());
        }
        tensors.push(Tensor {
            name,
            dtype,
            shape,
            begin,
            end,
        });
    }
    // File order, so that the output is written in one forward pass over the input.
    tensors.sort_by_key(|t| (t.begin, t.end));
    Ok((metadata, tensors))
}

/// The output header (8-byte length and JSON padded with spaces to a multiple of 8), with the
/// tensors in file order and their new dtypes and offsets.
fn header_bytes(metadata: &Option<serde_json::Value>, tensors: &[Tensor]) -> Result<Vec<u8>, Error> {
    let mut json = String::from("{");
    let mut first = true;
    if let Some(m) = metadata {
        json.push_str("\"__metadata__\":");
        json.push_str(&serde_json::to_string(m)?);
        first = false;
    }
    let mut offset = 0u64;
    for t in tensors {
        let (dtype, len) = if t.dtype == "F32" {
            ("BF16", (t.end - t.begin) / 2)
        } else {
            (t.dtype.as_str(), t.end - t.begin)
        };
        if !first {
            json.push(',');
        }
        first = false;
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            serde_json::to_string(&t.name)?,
            serde_json::to_string(dtype)?,
            dims.join(","),
            offset + len
        ));
        offset += len;
    }
    json.push('}');
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    Ok(out)
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
    let mut r = BufReader::with_capacity(IO_BUF, File::open(input)?);
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER {
        return Err(format!("{}: header of {header_len} bytes", input.display()).into());
    }
    let mut json = vec![0u8; header_len as usize];
    r.read_exact(&mut json)?;
    let (metadata, tensors) = parse_header(&json)?;
    // Only F32 tensors are decoded, so only their sizes must agree with their shapes; other
    // dtypes are copied as they are.
    for t in tensors.iter().filter(|t| t.dtype == "F32") {
        if t.shape.iter().product::<u64>() * 4 != t.end - t.begin {
            return Err(format!("tensor {:?}: shape and offsets disagree", t.name).into());
        }
    }
    for pair in tensors.windows(2) {
        if pair[1].begin < pair[0].end {
            return Err(format!("tensor {:?} overlaps the one before it", pair[1].name).into());
        }
    }

    let mut w = BufWriter::with_capacity(IO_BUF, File::create(output)?);
    let header = header_bytes(&metadata, &tensors)?;
    w.write_all(&header)?;
    let mut total = header.len() as u64;

    let mut pos = 0u64; // within the input's data section
    let mut raw = vec![0u8; BLOCK * 4];
    let mut out = Vec::with_capacity(BLOCK * 2);
    let (mut converted, mut copied) = (0usize, 0usize);
    for t in &tensors {
        skip(&mut r, t.begin - pos)?;
        pos = t.end;
        let mut left = t.end - t.begin;
        if t.dtype != "F32" {
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
