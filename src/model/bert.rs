//! Sentence embeddings from a BERT model, for `validate`'s model-level check: the model runs
//! (candle, on the CPU) over real sentences, and its mean-pooled outputs are compared by cosine
//! similarity with those of the model it should be close to.
//!
//! A model is a safetensors file with `config.json` and `tokenizer.json` (the Hugging Face
//! layout) in its folder.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a BERT configuration: {source}")]
    Config { path: PathBuf, source: serde_json::Error },
    #[error("{path}: not a tokenizer: {why}")]
    Tokenizer { path: PathBuf, why: String },
    #[error("{what}: {source}")]
    Model { what: String, source: candle_core::Error },
}

/// Where a model's configuration and tokenizer lie: beside its weights file, else beside the
/// file a link to it points at (a model linked in from elsewhere). The Hugging Face cache links
/// each file of a snapshot folder into its blob store, so the link's own folder comes first.
pub fn companions(weights: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let beside = weights.parent().unwrap_or(Path::new("."));
    if beside.join("config.json").is_file() {
        return Ok((beside.join("config.json"), beside.join("tokenizer.json")));
    }
    let real = std::fs::canonicalize(weights).map_err(|source| Error::Io {
        path: weights.to_owned(),
        source,
    })?;
    let dir = real.parent().unwrap_or(Path::new("."));
    Ok((dir.join("config.json"), dir.join("tokenizer.json")))
}

/// A model's configuration and tokenizer, shared by the versions of its weights compared.
pub struct Architecture {
    config: Config,
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
}

impl Architecture {
    pub fn load(config: &Path, tokenizer: &Path) -> Result<Architecture, Error> {
        let text = std::fs::read(config).map_err(|source| Error::Io {
            path: config.to_owned(),
            source,
        })?;
        let config_value = serde_json::from_slice(&text).map_err(|source| Error::Config {
            path: config.to_owned(),
            source,
        })?;
        let tokenizer_path = tokenizer.to_owned();
        let mut tokenizer = Tokenizer::from_file(tokenizer).map_err(|e| Error::Tokenizer {
            path: tokenizer_path.clone(),
            why: e.to_string(),
        })?;
        // One sentence at a time: no padding; at most the positions the model has.
        let config: Config = config_value;
        tokenizer.with_padding(None);
        Ok(Architecture {
            config,
            tokenizer,
            tokenizer_path,
        })
    }

    /// The token ids of `sentence`, special tokens added, cut to the model's positions.
    fn tokens(&self, sentence: &str) -> Result<Vec<u32>, Error> {
        let encoding = self.tokenizer.encode(sentence, true).map_err(|e| Error::Tokenizer {
            path: self.tokenizer_path.clone(),
            why: format!("cannot encode {sentence:?}: {e}"),
        })?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(self.config.max_position_embeddings);
        Ok(ids)
    }

    /// The model with the weights of safetensors `bytes` (`what` names them in errors).
    pub fn model(&self, bytes: Vec<u8>, what: &str) -> Result<Model<'_>, Error> {
        let err = |source| Error::Model {
            what: what.to_string(),
            source,
        };
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).map_err(err)?;
        let model = BertModel::load(vb, &self.config).map_err(err)?;
        Ok(Model {
            arch: self,
            model,
            what: what.to_string(),
        })
    }
}

/// A BERT model ready to embed sentences.
pub struct Model<'a> {
    arch: &'a Architecture,
    model: BertModel,
    what: String,
}

impl Model<'_> {
    /// The mean of the last layer's outputs over the tokens of each sentence.
    pub fn embed(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let err = |source| Error::Model {
            what: self.what.clone(),
            source,
        };
        sentences
            .iter()
            .map(|s| {
                let ids = self.arch.tokens(s)?;
                let n = ids.len();
                let input = Tensor::from_vec(ids, (1, n), &Device::Cpu).map_err(err)?;
                let types = input.zeros_like().map_err(err)?;
                let out = self.model.forward(&input, &types, None).map_err(err)?;
                let pooled = out.mean(1).map_err(err)?.squeeze(0).map_err(err)?;
                pooled.to_vec1::<f32>().map_err(err)
            })
            .collect()
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// The sentences of a prose text (a README, a model card): its lines cut after `.`, `!` or `?`,
/// with at least five words, each once, in order. Lines of code, tables, headings, lists, links
/// and HTML are skipped, and so are the contents of fenced code blocks.
pub fn sentences(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let markup = ['|', '#', '<', '-', '*', '!', '[', '{', '}', '>', '(', '\''];
        if fenced || line.is_empty() || line.starts_with(markup) {
            continue;
        }
        let mut rest = line;
        while !rest.is_empty() {
            let end = rest
                .char_indices()
                .find(|&(i, c)| {
                    matches!(c, '.' | '!' | '?') && rest[i + 1..].chars().next().is_none_or(char::is_whitespace)
                })
                .map_or(rest.len(), |(i, _)| i + 1);
            let sentence = rest[..end].trim();
            if sentence.split_whitespace().count() >= 5 && seen.insert(sentence.to_string()) {
                out.push(sentence.to_string());
            }
            rest = rest[end..].trim_start();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_is_cut_into_sentences_and_markup_is_skipped() {
        let text = "# Title\n\nThis model maps sentences to vectors. It was tuned on logs!\n\
                    Short one.\n```python\nmodel = SentenceTransformer(name) # not prose at all.\n```\n\
                    | a | table | row | with | cells |\n- a list item with enough words\n\
                    Version 1.2 keeps the numbers in one sentence here?\n\
                    This model maps sentences to vectors.\n";
        assert_eq!(
            sentences(text),
            [
                "This model maps sentences to vectors.",
                "It was tuned on logs!",
                "Version 1.2 keeps the numbers in one sentence here?"
            ]
        );
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
