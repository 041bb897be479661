//! A second real family, of another kind than the MiniLM pair: four real fine-tunes of one
//! Tesseract LSTM text recognizer (tessdata_best eng), one per monospace font, each a package
//! directory whose model is a 15.4 MB `.traineddata` file (Tesseract's own container, float64
//! weights between headers of odd lengths) saved under its own name. The first is added alone,
//! two on it, the last with `--base auto`; all four check out bit for bit. Needs the real test data
//! (scripts/fetch-testdata.sh); the tests fail, never skip, without it.

mod common;

use common::*;

/// Growth limits, as fractions of the raw bytes added. Measured with the same data
/// (benches/plain.sh, docs/PERFORMANCE.md): zstd -19 stores a model alone in 0.475 of its raw
/// size; one fine-tune against another, `zstd -19 --long --patch-from` stores 0.379, xdelta3
/// 0.554 and bsdiff (taking 45 s) 0.277 to 0.281. sparse must stay a quarter below zstd's delta.
const ALONE_LIMIT: f64 = 0.44;
const SIBLING_LIMIT: f64 = 0.285;

#[test]
fn four_real_tesseract_fine_tunes_store_as_deltas_on_one_another_and_round_trip() {
    let data = real_data();
    let fonts = ["courier", "dejavu", "libmono", "ocrb"];
    let sb = Sandbox::new();
    for (i, font) in fonts.iter().enumerate() {
        let dir = data.join(format!("tesseract-{font}"));
        let model = dir.join(format!("glyphive_ocrmodel_{font}/glyphive{font}.traineddata"));
        let raw = std::fs::metadata(&model).expect("the real test data").len();
        let before = dir_bytes(&sb.store());
        // The last goes in with `--base auto`, which must find a sibling to code it against.
        let base = match i {
            0 => None,
            3 => Some("auto"),
            _ => Some("courier"),
        };
        sb.add_commit(&dir.join(format!("glyphive_ocrmodel_{font}")), font, base, font);
        let ratio = (dir_bytes(&sb.store()) - before) as f64 / raw as f64;
        eprintln!("{font}: store growth {ratio:.4} of the model's raw size");
        let limit = if i == 0 { ALONE_LIMIT } else { SIBLING_LIMIT };
        assert!(
            ratio <= limit,
            "{font} grew the store by {ratio:.4} of raw, over {limit}"
        );
    }
    for font in fonts {
        let out = sb.checkout(font, &format!("out/{font}"));
        let source = data.join(format!("tesseract-{font}/glyphive_ocrmodel_{font}"));
        assert_eq!(tree_hashes(&out), tree_hashes(&source), "{font} checks out bit-exact");
    }
    let ocrb = sb.json(&["show", "ocrb"]);
    let siblings: Vec<String> = fonts[..3].iter().map(|f| sb.git_ref(f).expect("committed")).collect();
    assert!(
        siblings.iter().any(|s| ocrb["base"] == s.as_str()),
        "ocrb's base: {}",
        ocrb["base"]
    );
    let show = sb.json(&["show", "dejavu"]);
    let model = show["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "glyphivedejavu.traineddata")
        .expect("the model file");
    assert_eq!(model["kind"], "file", "{model}");
    sb.assert_fsck_ok();
}
