//! Synthetic model generator for benchmarks (benches/, docs/PERFORMANCE.md).
//!
//! ```text
//! cargo run --release --example gen_model -- --out DIR --size-gb 2 --dtype bf16 --seed 1
//! cargo run --release --example gen_model -- --out DIR2 --seed 2 --finetune-of DIR
//! ```
//!
//! Without `--finetune-of` it writes `DIR/model.safetensors` with Llama-2-7B tensor names and
//! shapes (hidden 4096, intermediate 11008, vocab 32000), as many decoder layers as it takes to
//! reach at least `--size-gb` (decimal GB). Only when even one layer would overshoot a small
//! target are the widths halved, as often as needed. Matrix values are N(0, 0.02); norm weights
//! are 1 + N(0, 0.02). Values come from a seeded xoshiro256++ generator and Box-Muller, one
//! stream per tensor, so the output depends only on the arguments.
//!
//! With `--finetune-of BASE` (a directory holding one `.safetensors` file, or the file) it writes
//! a fine-tune of BASE: the same header bytes, names, shapes and dtypes; every row of every float
//! tensor scaled by `1 - 1e-4 * u` (`u` uniform in [0, 1), one per row) and about 30% of the
//! elements further multiplied by `1 + 1e-3 * n` (`n` standard normal; `--noise REL` sets the
//! 1e-3), rounded back to the tensor's dtype. In bf16 most of these changes are below half a
//! unit in the last place and round away: the program reports how many elements changed. Tensors of other dtypes are copied unchanged. `config.json` is copied from the
//! base's directory when there is one.
//!
//! Memory stays bounded whatever the size: tensors are generated or read and written in blocks
//! of `BLOCK` elements; nothing holds a whole tensor. Tensors are made in parallel, each from
//! its own stream and written at its offset, so the output does not depend on the thread count.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use half::{bf16, f16};
use sparse::model::safetensors::{self, dtype_name, read, NewTensor};

/// Elements per generated or transformed block.
const BLOCK: usize = 1 << 16;
/// I/O buffer size for reading and writing.
const IO_BUF: usize = 1 << 20;

type Error = Box<dyn std::error::Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Dtype::F32),
            "bf16" | "bfloat16" => Some(Dtype::Bf16),
            "f16" | "fp16" | "float16" => Some(Dtype::F16),
            _ => None,
        }
    }
    fn from_safetensors(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "BF16" => Some(Dtype::Bf16),
            "F16" => Some(Dtype::F16),
            _ => None,
        }
    }
    fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::Bf16 => "BF16",
            Dtype::F16 => "F16",
        }
    }
    fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
        }
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }
    /// Appends `values` to `out` in this dtype, little-endian (rounding to nearest even).
    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Dtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Dtype::Bf16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&bf16::from_f32(v).to_le_bytes())),
            Dtype::F16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        }
    }
    /// Appends the values of little-endian `bytes` (whole elements) to `out`.
    fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
            Dtype::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Dtype::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        }
    }
}

/// xoshiro256++, seeded through splitmix64.
struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
            spare: None,
        }
    }

    /// A stream for one tensor: the seed mixed with the tensor's name (FNV-1a).
    fn for_tensor(seed: u64, name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ h)
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

struct Args {
    out: PathBuf,
    size_gb: f64,
    dtype: Dtype,
    seed: u64,
    finetune_of: Option<PathBuf>,
    /// Relative noise of the fine-tune's perturbed elements.
    noise: f64,
}

const USAGE: &str =
    "usage: gen_model --out DIR [--size-gb GB] [--dtype bf16|f32|f16] [--seed N] [--finetune-of BASE [--noise REL]]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        out: PathBuf::new(),
        size_gb: 2.0,
        dtype: Dtype::Bf16,
        seed: 0,
        finetune_of: None,
        noise: 1e-3,
    };
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--size-gb" => {
                args.size_gb = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v > 0.0)
                    .ok_or_else(|| format!("--size-gb {value:?}: expected a positive number"))?
            }
            "--dtype" => {
                args.dtype =
                    Dtype::parse(&value).ok_or_else(|| format!("--dtype {value:?}: expected bf16, f32 or f16"))?
            }
            "--seed" => {
                args.seed = value
                    .parse()
                    .map_err(|_| format!("--seed {value:?}: expected an integer"))?
            }
            "--finetune-of" => args.finetune_of = Some(PathBuf::from(value)),
            "--noise" => {
                args.noise = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v >= 0.0)
                    .ok_or_else(|| format!("--noise {value:?}: expected a non-negative number"))?
            }
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    args.out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = std::fs::create_dir_all(&args.out)
        .map_err(Error::from)
        .and_then(|()| match &args.finetune_of {
            Some(base) => finetune(base, &args),
            None => generate(&args),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_model: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tensor layout of the generated model.
struct Shape {
    hidden: u64,
    intermediate: u64,
    vocab: u64,
    heads: u64,
    layers: u64,
}

impl Shape {
    /// Llama-2-7B widths (halved only if one layer overshoots `target` bytes), with the fewest
    /// layers that reach `target`.
    fn for_target(target: u64, esize: u64) -> Shape {
        let (mut hidden, mut intermediate, mut heads, vocab) = (4096u64, 11008u64, 32u64, 32000u64);
        let fixed = |h: u64| (2 * vocab * h + h) * esize;
        let layer = |h: u64, i: u64| (4 * h * h + 3 * h * i + 2 * h) * esize;
        while hidden > 64 && fixed(hidden) + layer(hidden, intermediate) > target {
            hidden /= 2;
            intermediate /= 2;
            heads = (heads / 2).max(1);
        }
        let rest = target.saturating_sub(fixed(hidden));
        let layers = rest.div_ceil(layer(hidden, intermediate)).max(1);
        Shape {
            hidden,
            intermediate,
            vocab,
            heads,
            layers,
        }
    }

    /// (name, shape) in the file order of a Hugging Face Llama checkpoint (names sorted within
    /// each layer).
    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (h, i) = (self.hidden, self.intermediate);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h]));
            t.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
            t.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            t.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            for proj in ["k_proj", "o_proj", "q_proj", "v_proj"] {
                t.push((format!("{p}.self_attn.{proj}.weight"), vec![h, h]));
            }
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        t.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        t
    }
}

/// The header bytes, tensors in the order given.
fn header_bytes(tensors: &[(String, Vec<u64>)], dtype: Dtype) -> Vec<u8> {
    let entries: Vec<NewTensor<'_>> = tensors
        .iter()
        .map(|(name, shape)| NewTensor {
            name,
            dtype: dtype.safetensors_name(),
            shape,
            len: shape.iter().product::<u64>() * dtype.size() as u64,
        })
        .collect();
    let mut metadata = serde_json::Map::new();
    metadata.insert("format".into(), "pt".into());
    safetensors::header_bytes(&entries, Some(&metadata))
}

fn generate(args: &Args) -> Result<(), Error> {
    let target = (args.size_gb * 1e9) as u64;
    let esize = args.dtype.size() as u64;
    let shape = Shape::for_target(target, esize);
    let tensors = shape.tensors();
    let path = args.out.join("model.safetensors");
    let header = header_bytes(&tensors, args.dtype);
    let file = File::create(&path)?;
    file.write_all_at(&header, 0)?;
    // Each tensor from its own stream, in parallel, written at its offset.
    let mut placed = Vec::with_capacity(tensors.len());
    let mut total = header.len() as u64;
    for (name, dims) in &tensors {
        placed.push((name, dims, total));
        total += dims.iter().product::<u64>() * esize;
    }
    file.set_len(total)?;
    placed
        .par_iter()
        .try_for_each(|&(name, dims, offset)| -> Result<(), String> {
            let mut rng = Rng::for_tensor(args.seed, name);
            let norm = dims.len() == 1;
            let mut left = dims.iter().product::<u64>() as usize;
            let mut at = offset;
            let mut values = Vec::with_capacity(BLOCK);
            let mut bytes = Vec::with_capacity(BLOCK * 4);
            while left > 0 {
                let n = left.min(BLOCK);
                values.clear();
                values.extend((0..n).map(|_| {
                    let v = 0.02 * rng.normal();
                    (if norm { 1.0 + v } else { v }) as f32
                }));
                bytes.clear();
                args.dtype.encode(&values, &mut bytes);
                file.write_all_at(&bytes, at)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                at += bytes.len() as u64;
                left -= n;
            }
            Ok(())
        })?;
    file.sync_all()?;

    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads,
        "vocab_size": shape.vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "torch_dtype": args.dtype.torch_name(),
        "generator": {"tool": "sparse examples/gen_model.rs", "seed": args.seed},
    });
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    eprintln!(
        "wrote {} ({total} bytes, {} layers, hidden {}, {} tensors, {})",
        path.display(),
        shape.layers,
        shape.hidden,
        tensors.len(),
        args.dtype.safetensors_name()
    );
    Ok(())
}

/// The safetensors file of `base`: the file itself, or the only `.safetensors` file in it.
fn base_file(base: &Path) -> Result<PathBuf, Error> {
    if base.is_file() {
        return Ok(base.to_owned());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(base)
        .map_err(|e| format!("{}: {e}", base.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("{}: no .safetensors file", base.display()).into()),
        _ => Err(format!("{}: more than one .safetensors file", base.display()).into()),
    }
}

fn finetune(base: &Path, args: &Args) -> Result<(), Error> {
    let src = base_file(base)?;
    // The library's reader validates the header: known dtypes, sizes that match the shapes,
    // and tensors that tile the data section exactly, in file order.
    let (header, header_bytes) = read(&src)?;
    let input = File::open(&src)?;
    let path = args.out.join("model.safetensors");
    let file = File::create(&path)?;
    file.write_all_at(&header_bytes, 0)?;
    file.set_len(input.metadata()?.len())?;
    // Tensors tile the data section in file order; each is transformed on its own, in parallel.
    let mut placed = Vec::with_capacity(header.tensors.len());
    let mut offset = header.len;
    for t in &header.tensors {
        placed.push((t, offset));
        offset += t.len();
    }
    let changed = AtomicU64::new(0);
    let elements = AtomicU64::new(0);
    let io = |e: std::io::Error| format!("{}: {e}", src.display());
    placed.par_iter().try_for_each(|&(t, offset)| -> Result<(), String> {
        let Some(dtype) = Dtype::from_safetensors(&dtype_name(t.dtype)) else {
            let mut buf = vec![0; IO_BUF];
            let mut at = 0;
            while at < t.len() {
                let n = (t.len() - at).min(IO_BUF as u64) as usize;
                input.read_exact_at(&mut buf[..n], offset + at).map_err(io)?;
                file.write_all_at(&buf[..n], offset + at).map_err(io)?;
                at += n as u64;
            }
            return Ok(());
        };
        let esize = dtype.size() as u64;
        let count = t.shape.iter().product::<u64>();
        let row = t.shape.last().copied().unwrap_or(1).max(1);
        let mut rng = Rng::for_tensor(args.seed, &t.name);
        let mut scale = 1.0f64;
        let mut i = 0u64;
        let mut raw = Vec::with_capacity(BLOCK * 4);
        let mut values = Vec::with_capacity(BLOCK);
        let mut out = Vec::with_capacity(BLOCK * 4);
        while i < count {
            let n = (count - i).min(BLOCK as u64);
            let at = offset + i * esize;
            raw.resize((n * esize) as usize, 0);
            input.read_exact_at(&mut raw, at).map_err(io)?;
            values.clear();
            dtype.decode(&raw, &mut values);
            for v in values.iter_mut() {
                if i.is_multiple_of(row) {
                    scale = 1.0 - 1e-4 * rng.uniform();
                }
                let mut x = *v as f64 * scale;
                if rng.uniform() < 0.3 {
                    x *= 1.0 + args.noise * rng.normal();
                }
                *v = x as f32;
                i += 1;
            }
            out.clear();
            dtype.encode(&values, &mut out);
            let differ = raw
                .chunks_exact(esize as usize)
                .zip(out.chunks_exact(esize as usize))
                .filter(|(a, b)| a != b)
                .count() as u64;
            changed.fetch_add(differ, Ordering::Relaxed);
            elements.fetch_add(n, Ordering::Relaxed);
            file.write_all_at(&out, at).map_err(io)?;
        }
        Ok(())
    })?;
    file.sync_all()?;
    let (changed, elements) = (changed.into_inner(), elements.into_inner());

    let config = src.with_file_name("config.json");
    if config.is_file() {
        std::fs::copy(&config, args.out.join("config.json"))?;
    }
    eprintln!(
        "wrote {} (fine-tune of {}: {changed} of {elements} float elements changed, {:.1}%)",
        path.display(),
        src.display(),
        100.0 * changed as f64 / elements.max(1) as f64
    );
    Ok(())
}
