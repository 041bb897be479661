//! A revision's tensors in memory as candle-core tensors (`Repository::tensors`): the same
//! values, dtypes and shapes as candle-core's own loading of the files that were added, for
//! the real pair and for every dtype candle-core has, with clear errors for the rest.

mod common;

use candle_core::{DType, Device};
use common::*;
use sparse::api::Repository;

/// A tensor's values as little-endian bytes, whatever its dtype.
fn bytes(t: &candle_core::Tensor) -> Vec<u8> {
    let flat = t.flatten_all().expect("any tensor flattens");
    match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>().unwrap(),
        DType::U32 => flat
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I16 => flat
            .to_vec1::<i16>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I32 => flat
            .to_vec1::<i32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        // Exact in f32, NaNs included (the same conversion on both sides).
        DType::F8E4M3 => bytes(&flat.to_dtype(DType::F32).unwrap()),
        other => panic!("no bytes for {other:?}"),
    }
}

/// `rev`'s tensors equal candle-core's loading of `file`, name by name, bit for bit.
fn assert_same(repo: &Repository, rev: &str, file: &std::path::Path) {
    let expected = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let got = repo.tensors(rev).unwrap();
    assert_eq!(got.len(), expected.len(), "{rev}");
    for t in &got {
        let e = &expected[&t.name];
        assert_eq!(t.tensor.dtype(), e.dtype(), "{rev}: {}", t.name);
        assert_eq!(t.tensor.dims(), e.dims(), "{rev}: {}", t.name);
        assert!(bytes(&t.tensor) == bytes(e), "{rev}: {} differs", t.name);
    }
}

#[test]
fn the_real_pair_as_candle_tensors() {
    let data = real_data();
    let sb = Sandbox::new();
    let (base, ft) = (data.join("base.safetensors"), data.join("finetune.safetensors"));
    sb.add_commit(&base, "base", None, "base");
    sb.add_commit(&ft, "finetune", Some("base"), "finetune");
    let repo = Repository::discover(sb.path()).unwrap();
    assert_same(&repo, "base", &base);
    assert_same(&repo, "finetune", &ft);
    let got = repo.tensors("finetune").unwrap();
    assert!(
        got.iter().all(|t| t.file == "finetune.safetensors"),
        "{:?}",
        got[0].file
    );
}

#[test]
fn every_candle_dtype_empty_and_scalar_tensors_down_a_chain() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 64);
    let mut base = Vec::new();
    for (i, dtype) in ["U8", "U32", "I16", "I32", "I64", "BF16", "F16", "F32", "F64", "F8_E4M3"]
        .iter()
        .enumerate()
    {
        base.push(common::Tensor::random(
            &format!("t.{dtype}"),
            dtype,
            &[7, 3 + i as u64],
            i as u64,
        ));
    }
    base.push(common::Tensor::random("empty", "F32", &[4, 0], 20));
    base.push(common::Tensor::random("scalar", "BF16", &[], 21));
    let ft: Vec<common::Tensor> = base.iter().map(|t| t.finetuned(0.3, 22)).collect();
    let ft2: Vec<common::Tensor> = ft.iter().map(|t| t.finetuned(0.3, 23)).collect();
    let mut files = Vec::new();
    for (name, tensors, parent) in [
        ("base", &base, None),
        ("ft", &ft, Some("base")),
        ("ft2", &ft2, Some("ft")),
    ] {
        let file = sb.write(&format!("{name}.safetensors"), &safetensors_bytes(tensors, &[]));
        sb.add_commit(&file, name, parent, name);
        files.push((name, file));
    }
    let repo = Repository::discover(sb.path()).unwrap();
    for (rev, file) in &files {
        assert_same(&repo, rev, file);
    }
}

#[test]
fn a_dtype_candle_lacks_and_an_unknown_revision_are_named() {
    let sb = Sandbox::new();
    let tensors = vec![
        common::Tensor::random("ok", "F32", &[4], 1),
        common::Tensor::random("flags", "BOOL", &[4], 2),
    ];
    let file = sb.write("m.safetensors", &safetensors_bytes(&tensors, &[]));
    sb.add_commit(&file, "m", None, "m");
    let repo = Repository::discover(sb.path()).unwrap();
    let e = repo.tensors("m").unwrap_err().to_string();
    assert!(
        e.contains("flags") && e.contains("BOOL") && e.contains("m.safetensors"),
        "{e}"
    );
    let e = repo.tensors("no-such-rev").unwrap_err().to_string();
    assert!(e.contains("no-such-rev"), "{e}");
}
