//! Files of no format sparse parses, holding arrays of floats between headers of odd lengths
//! (as a Tesseract model, a pickle or an ONNX graph does): a fine-tune of one stores as a delta
//! on its base's file, paired by path or by extension, and checks out bit for bit, including
//! when it is longer or shorter than its base's file.

mod common;

use common::*;

/// A generated "model file": headers of odd lengths, each before an array of float64 or
/// float32 values, at offsets that fall at every phase modulo 8. `moved` is the number of units
/// of the last place each value moves by at most (0: the base).
fn model_file(seed: u64, moved: u64, scale: f64) -> Vec<u8> {
    let mut values = Lcg::new(seed);
    let mut moves = Lcg::new(seed ^ (0x5eed + moved));
    let mut out = Vec::new();
    for layer in 0..12u32 {
        out.extend_from_slice(format!("layer{layer}\x01\x00weights").as_bytes());
        out.extend(std::iter::repeat_n(b'.', layer as usize));
        let n = 36_000 + 2_100 * layer as usize;
        for _ in 0..n {
            let v = (values.unit() - 0.5) * scale;
            let step = match moved {
                0 => 0,
                m => moves.below(2 * m + 1) as i64 - m as i64,
            };
            if layer % 3 == 2 {
                let bits = (v as f32).to_bits() as i64 + step / (1 << 20);
                out.extend_from_slice(&(bits as u32).to_le_bytes());
            } else {
                let bits = v.to_bits() as i64 + step;
                out.extend_from_slice(&(bits as u64).to_le_bytes());
            }
        }
    }
    out
}

fn growth(sb: &Sandbox, source: &std::path::Path, name: &str, base: Option<&str>) -> f64 {
    let before = dir_bytes(&sb.store()) as f64;
    sb.add_commit(source, name, base, name);
    (dir_bytes(&sb.store()) as f64 - before) / std::fs::metadata(source).expect("the source").len() as f64
}

#[test]
fn a_fine_tune_of_a_plain_file_stores_as_a_delta_and_checks_out_bit_exact() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 256 << 10);
    let base = model_file(1, 0, 0.04);
    let tuned = model_file(1, 1 << 30, 0.04);
    assert_eq!(base.len(), tuned.len());
    let b = sb.write("base/model.bin", &base);
    let t = sb.write("tuned/model.bin", &tuned);

    let on_base_alone = growth(&sb, &b, "base", None);
    let delta = growth(&sb, &t, "tuned", Some("base"));
    // Alone, in a store of its own (in this one its chunks would be found already stored).
    let other = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 256 << 10);
    let alone = growth(&other, &other.write("tuned/model.bin", &tuned), "alone", None);
    eprintln!("growth over raw: base {on_base_alone:.3}, fine-tune alone {alone:.3}, on its base {delta:.3}");
    // Each value moved by at most 2^30 units of 2^52: the delta holds about 31 bits of 64.
    assert!(
        delta < 0.6,
        "the fine-tune on its base grew the store by {delta:.3} of raw"
    );
    assert!(delta < alone * 0.7, "on its base {delta:.3}, alone {alone:.3}");

    for (sb, rev, bytes) in [(&sb, "base", &base), (&sb, "tuned", &tuned), (&other, "alone", &tuned)] {
        let out = sb.checkout(rev, &format!("out/{rev}"));
        assert!(
            std::fs::read(out.join("model.bin")).expect("checked out") == *bytes,
            "{rev} is bit-exact"
        );
    }
    let show = sb.json(&["show", "tuned"]);
    assert_eq!(show["files"][0]["kind"], "file", "{show}");
    sb.assert_fsck_ok();
}

#[test]
fn plain_files_pair_by_extension_and_may_grow_or_shrink() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 128 << 10);
    let base = model_file(7, 0, 0.1);
    let b = sb.write("base/weights.bin", &base);
    sb.add_commit(&b, "base", None, "base");

    // Saved under another name, with a trailer the base lacks.
    let mut longer = model_file(7, 1 << 24, 0.1);
    longer.extend_from_slice(b"trailing metadata the base never had");
    let l = sb.write("longer/renamed.bin", &longer);
    let renamed = growth(&sb, &l, "longer", Some("base"));
    // Cut short: the end of the base has no counterpart.
    let shorter = model_file(7, (1 << 24) + 1, 0.1)[..base.len() * 2 / 3 + 5].to_vec();
    let s = sb.write("shorter/weights.bin", &shorter);
    let cut = growth(&sb, &s, "shorter", Some("base"));
    // Another extension pairs with nothing: stored on its own.
    let o = sb.write("other/weights.dat", &model_file(7, (1 << 24) + 2, 0.1));
    let unpaired = growth(&sb, &o, "other", Some("base"));
    eprintln!("growth over raw: renamed {renamed:.3}, shorter {cut:.3}, unpaired {unpaired:.3}");
    assert!(renamed < unpaired * 0.8, "renamed {renamed:.3}, unpaired {unpaired:.3}");
    assert!(cut < unpaired * 0.8, "shorter {cut:.3}, unpaired {unpaired:.3}");

    for (rev, name, bytes) in [
        ("longer", "renamed.bin", &longer),
        ("shorter", "weights.bin", &shorter),
        ("other", "weights.dat", &model_file(7, (1 << 24) + 2, 0.1)),
    ] {
        let out = sb.checkout(rev, &format!("out/{rev}"));
        assert!(
            std::fs::read(out.join(name)).expect("checked out") == *bytes,
            "{rev} is bit-exact"
        );
    }
    sb.assert_fsck_ok();
}
