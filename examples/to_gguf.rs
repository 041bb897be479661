//! Writes a safetensors model as a GGUF file, as llama.cpp's converters do (benches/gguf.sh):
//!
//! ```text
//! cargo run --release --example to_gguf -- IN.safetensors OUT.gguf TYPE NAME
//! ```
//!
//! TYPE is the GGML type of the matrices: F32, F16, BF16, Q8_0, Q8_1, Q5_0, Q5_1, Q4_0, Q4_1,
//! Q6_K, Q4_K or Q2_K. Vectors (biases, norms) are written as F32, as llama.cpp keeps them. A
//! matrix whose rows are not whole blocks of TYPE (MiniLM's rows of 384 elements, for the
//! 256-element K-quants) is written with rows of one block each, the same values in the same
//! order; one whose elements are not whole blocks stays F32. NAME goes into `general.name`: a
//! fine-tune names itself, so its header has another length than its base's and every tensor
//! lies at another offset. Tensors are written in name order. The whole model is held in
//! memory: for test-sized models only.

use std::process::ExitCode;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

type Error = Box<dyn std::error::Error>;

fn ggml_type(name: &str) -> Result<GgmlDType, Error> {
    Ok(match name {
        "F32" => GgmlDType::F32,
        "F16" => GgmlDType::F16,
        "BF16" => GgmlDType::BF16,
        "Q8_0" => GgmlDType::Q8_0,
        "Q8_1" => GgmlDType::Q8_1,
        "Q5_0" => GgmlDType::Q5_0,
        "Q5_1" => GgmlDType::Q5_1,
        "Q4_0" => GgmlDType::Q4_0,
        "Q4_1" => GgmlDType::Q4_1,
        "Q6_K" => GgmlDType::Q6K,
        "Q4_K" => GgmlDType::Q4K,
        "Q2_K" => GgmlDType::Q2K,
        other => return Err(format!("unknown type {other:?}").into()),
    })
}

fn convert(input: &str, output: &str, ty: &str, name: &str) -> Result<(), Error> {
    let ty = ggml_type(ty)?;
    let mut tensors: Vec<_> = candle_core::safetensors::load(input, &Device::Cpu)?
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let quantized = tensors
        .iter()
        .map(|(n, t)| {
            let (count, block) = (t.elem_count(), ty.block_size());
            let q = match t.dims() {
                [.., last] if t.dims().len() >= 2 && last % block == 0 => QTensor::quantize(t, ty)?,
                _ if t.dims().len() >= 2 && count % block == 0 => {
                    QTensor::quantize(&t.reshape((count / block, block))?, ty)?
                }
                _ => QTensor::quantize(t, GgmlDType::F32)?,
            };
            Ok((n.as_str(), q))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let refs: Vec<(&str, &QTensor)> = quantized.iter().map(|(n, q)| (*n, q)).collect();
    let arch = gguf_file::Value::String("bert".into());
    let general_name = gguf_file::Value::String(name.into());
    let metadata = [("general.architecture", &arch), ("general.name", &general_name)];
    let mut out = std::fs::File::create(output)?;
    gguf_file::write(&mut out, &metadata, &refs)?;
    eprintln!("wrote {output}: {} tensors", refs.len());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, ty, name] = args.as_slice() else {
        eprintln!("usage: to_gguf IN.safetensors OUT.gguf TYPE NAME");
        return ExitCode::from(2);
    };
    match convert(input, output, ty, name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("to_gguf: {e}");
            ExitCode::FAILURE
        }
    }
}
