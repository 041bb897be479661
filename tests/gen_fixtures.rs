//! The generator of `fixtures/tiny-model` and `fixtures/tiny-finetune`, and the check that the
//! committed fixtures are exactly what it produces (so they cannot drift from it).
//!
//! Regenerate with `cargo test --test gen_fixtures -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{finetune_bytes, safetensors_bytes, Lcg, Tensor};

/// Everything the fixtures hold must stay below this many bytes.
const BUDGET: u64 = 64 * 1024;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The model directories: directory -> file -> bytes.
type Fixtures = BTreeMap<&'static str, BTreeMap<&'static str, Vec<u8>>>;

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "model", "store", "delta", "base", "tensor", "chunk",
    "weight", "bias", "fine", "##tune", "git", "commit", "checkout", "layer", "norm", "embed", "##ding", "is", "of",
    "to", "and", "in", "for", "on", "with", "by", "as", "at", "from", "it", "be", "this", "that", "or", "an", "are",
    "not", "was", "can", "all", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", ".",
    ",", "!", "?", "'", "-", "##s",
];

fn tokenizer(vocab: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("      {}: {i}", common::json_str(t)))
        .collect();
    format!(
        "{{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"normalizer\": {{ \"type\": \"BertNormalizer\", \"lowercase\": true }},\n  \"pre_tokenizer\": {{ \"type\": \"BertPreTokenizer\" }},\n  \"model\": {{\n    \"type\": \"WordPiece\",\n    \"unk_token\": \"[UNK]\",\n    \"continuing_subword_prefix\": \"##\",\n    \"vocab\": {{\n{}\n    }}\n  }}\n}}\n",
        entries.join(",\n")
    )
    .into_bytes()
}

fn config(architecture: &str, vocab: usize, extra: &str) -> Vec<u8> {
    format!(
        "{{\n  \"architectures\": [\"{architecture}\"],\n  \"model_type\": \"tiny-bert\",\n  \"hidden_size\": 16,\n  \"intermediate_size\": 32,\n  \"num_hidden_layers\": 2,\n  \"max_position_embeddings\": 32,\n  \"vocab_size\": {vocab},{extra}\n  \"torch_dtype\": \"float32\"\n}}\n"
    )
    .into_bytes()
}

/// position_ids as a model stores them: 0, 1, 2 ... as I64.
fn position_ids() -> Tensor {
    Tensor {
        name: "embeddings.position_ids".into(),
        dtype: "I64".into(),
        shape: vec![1, 32],
        data: (0..32i64).flat_map(i64::to_le_bytes).collect(),
    }
}

fn base_tensors() -> Vec<Tensor> {
    let mut mask = Tensor::random("attention.mask_template", "BOOL", &[16], 9);
    mask.data = (0..16).map(|i| u8::from(i % 3 != 0)).collect();
    vec![
        Tensor::random("embeddings.word_embeddings.weight", "F32", &[64, 16], 1),
        position_ids(),
        Tensor::random("layer.0.attention.weight", "BF16", &[16, 16], 2),
        Tensor::random("layer.0.attention.bias", "F16", &[16], 3),
        Tensor::random("layer.1.mlp.weight", "F32", &[32, 16], 4),
        Tensor::random("layer.1.mlp.bias", "F32", &[32], 5),
        Tensor::random("norm.weight", "F32", &[16], 6),
        Tensor::random("pooler.dense.weight", "F16", &[16, 16], 7),
        mask,
    ]
}

/// Same names, slightly changed values; the vocabulary grows by two rows (a changed shape),
/// the pooler goes, a classifier head comes; position_ids and the mask stay bit-identical.
fn finetune_tensors(base: &[Tensor]) -> Vec<Tensor> {
    let mut out = Vec::new();
    for (i, t) in base.iter().enumerate() {
        match t.name.as_str() {
            "pooler.dense.weight" => continue,
            "embeddings.position_ids" | "attention.mask_template" => out.push(t.clone()),
            "embeddings.word_embeddings.weight" => {
                let mut data = finetune_bytes(&t.data, 4, 0.3, 100);
                let mut rng = Lcg::new(101);
                for _ in 0..2 * 16 {
                    let v = ((rng.unit() * 2.0 - 1.0) * 0.02) as f32;
                    data.extend_from_slice(&v.to_le_bytes());
                }
                out.push(Tensor {
                    shape: vec![66, 16],
                    data,
                    ..t.clone()
                });
            }
            _ => out.push(t.finetuned(0.3, 200 + i as u64)),
        }
    }
    out.push(Tensor::random("classifier.weight", "F32", &[4, 16], 300));
    out
}

/// What the generator produces.
fn generate() -> Fixtures {
    let base = base_tensors();
    let tuned = finetune_tensors(&base);
    let mut vocab = VOCAB.to_vec();
    vocab.extend(["[ALERT]", "[INCIDENT]"]);
    let mut fixtures = Fixtures::new();
    fixtures.insert(
        "tiny-model",
        BTreeMap::from([
            ("config.json", config("TinyBertForMaskedLM", 64, "")),
            ("tokenizer.json", tokenizer(VOCAB)),
            ("model.safetensors", safetensors_bytes(&base, &[("format", "pt")])),
        ]),
    );
    fixtures.insert(
        "tiny-finetune",
        BTreeMap::from([
            (
                "config.json",
                config("TinyBertForSequenceClassification", 66, "\n  \"num_labels\": 4,"),
            ),
            ("tokenizer.json", tokenizer(&vocab)),
            ("model.safetensors", safetensors_bytes(&tuned, &[("format", "pt")])),
        ]),
    );
    fixtures
}

#[test]
#[ignore = "writes fixtures/; run with `cargo test --test gen_fixtures -- --ignored`"]
fn write_fixtures() {
    for (dir, files) in generate() {
        let dir = fixtures_dir().join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn committed_fixtures_are_what_the_generator_makes() {
    let regenerate = "run `cargo test --test gen_fixtures -- --ignored` and commit fixtures/";
    let mut total = 0;
    for (dir, files) in generate() {
        let path = fixtures_dir().join(dir);
        let on_disk = common::tree_hashes(&path);
        let names: Vec<&str> = on_disk.keys().map(String::as_str).collect();
        let expected: Vec<&str> = files.keys().copied().collect();
        assert_eq!(names, expected, "fixtures/{dir} holds other files: {regenerate}");
        for (name, bytes) in &files {
            let committed = std::fs::read(path.join(name)).unwrap();
            assert!(
                committed == *bytes,
                "fixtures/{dir}/{name} differs from the generator: {regenerate}"
            );
            total += bytes.len() as u64;
        }
    }
    total += std::fs::metadata(fixtures_dir().join("README.md")).unwrap().len();
    assert!(total < BUDGET, "fixtures take {total} bytes, more than {BUDGET}");
}

#[test]
fn the_generator_is_deterministic_and_makes_what_it_promises() {
    assert_eq!(generate(), generate());
    let base = base_tensors();
    let tuned = finetune_tensors(&base);
    let fixtures = generate();
    common::assert_reference_reads(&fixtures["tiny-model"]["model.safetensors"], &base);
    common::assert_reference_reads(&fixtures["tiny-finetune"]["model.safetensors"], &tuned);
    for dir in fixtures.values() {
        for name in ["config.json", "tokenizer.json"] {
            serde_json::from_slice::<serde_json::Value>(&dir[name]).expect("valid JSON");
        }
    }
    let names = |ts: &[Tensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let (bn, tn) = (names(&base), names(&tuned));
    assert!(bn.contains(&"pooler.dense.weight".into()) && !tn.contains(&"pooler.dense.weight".into()));
    assert!(!bn.contains(&"classifier.weight".into()) && tn.contains(&"classifier.weight".into()));
    let find = |ts: &[Tensor], n: &str| ts.iter().find(|t| t.name == n).unwrap().clone();
    let e = "embeddings.word_embeddings.weight";
    assert_ne!(find(&base, e).shape, find(&tuned, e).shape);
    for t in &tuned {
        let Some(b) = base.iter().find(|b| b.name == t.name) else {
            continue;
        };
        let same = t.name == "embeddings.position_ids" || t.name == "attention.mask_template";
        assert_eq!(b.data == t.data, same, "{}", t.name);
    }
}
