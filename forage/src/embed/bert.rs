//! The model-backed embedder: a BERT-style sentence-transformers model (all-MiniLM-L6-v2 by
//! default) run with candle on the CPU.
//!
//! Pipeline per batch: tokenize with the folder's `tokenizer.json` (truncated to
//! [`TOKENS_MAX`] tokens, padded to the batch's longest), run the encoder, average the last
//! hidden states over the attention mask ([`mean_pool`]), and L2-normalise. Padding tokens are
//! masked out of both attention and pooling, so a text's vector does not depend on the other
//! texts in its batch.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::install::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, verify_model_dir};
use super::{EmbedError, Embedder, clip_text};

/// Most tokens per text (including `[CLS]` and `[SEP]`); all-MiniLM-L6-v2 was trained on 256.
pub const TOKENS_MAX: usize = 256;

/// Smallest mask sum used as a divisor in pooling, so an all-padding row cannot divide by 0.
const MASK_SUM_MIN: f64 = 1e-9;

/// Smallest norm used as a divisor when normalising.
const NORM_MIN: f64 = 1e-12;

/// A BERT sentence embedder loaded from a model folder.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dims: usize,
    name: String,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder").field("name", &self.name).field("dims", &self.dims).finish()
    }
}

fn model_err(e: candle_core::Error) -> EmbedError {
    EmbedError::Model(e.to_string())
}

impl BertEmbedder {
    /// Loads the model in `dir` (see [`verify_model_dir`] for what the folder must hold). The
    /// embedder's name is the folder's name.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        verify_model_dir(dir, None)?;
        let config_path = dir.join(CONFIG_FILE);
        let config_bytes =
            std::fs::read(&config_path).map_err(|e| EmbedError::io("read", &config_path, e))?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| EmbedError::invalid_model(dir, format!("config.json: {e}")))?;
        let tokenizer = load_tokenizer(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        // SAFETY: the weights file is memory-mapped read-only; like every mmap user we rely on
        // nobody truncating the file while the model is loaded (the cache folder is ours).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
            .map_err(model_err)?;
        let model = BertModel::load(vb, &config).map_err(model_err)?;
        let name = dir.file_name().map_or_else(|| "bert".to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Self { model, tokenizer, dims: config.hidden_size, name })
    }

    /// The token ids the model sees for each text (truncated, without padding). Exposed so a
    /// reference implementation can be fed exactly the same input.
    pub fn token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let encodings = self.encode(texts)?;
        Ok(encodings
            .iter()
            .map(|enc| {
                let len = enc.get_attention_mask().iter().filter(|m| **m != 0).count();
                enc.get_ids()[..len].to_vec()
            })
            .collect())
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>, EmbedError> {
        let clipped: Vec<&str> = texts.iter().map(|t| clip_text(t)).collect();
        self.tokenizer.encode_batch(clipped, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))
    }

    fn forward(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self.encode(texts)?;
        let seq_len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let ids: Vec<u32> = encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let mask: Vec<u32> = encodings.iter().flat_map(|e| e.get_attention_mask().iter().copied()).collect();
        if ids.len() != texts.len() * seq_len || mask.len() != ids.len() {
            return Err(EmbedError::Tokenizer("encodings in a batch differ in length".into()));
        }
        let shape = (texts.len(), seq_len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu).map_err(model_err)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu).map_err(model_err)?;
        let type_ids = ids.zeros_like().map_err(model_err)?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask)).map_err(model_err)?;
        let pooled = mean_pool(&hidden, &mask).and_then(|p| l2_normalize_rows(&p)).map_err(model_err)?;
        pooled.to_vec2::<f32>().map_err(model_err)
    }
}

impl Embedder for BertEmbedder {
    fn dims(&self) -> usize {
        self.dims
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.forward(texts)?;
        debug_assert!(out.len() == texts.len() && out.iter().all(|v| v.len() == self.dims));
        Ok(out)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Loads `tokenizer.json` and sets the padding and truncation this embedder relies on,
/// whatever the file says.
fn load_tokenizer(dir: &Path) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_file(dir.join(TOKENIZER_FILE))
        .map_err(|e| EmbedError::invalid_model(dir, format!("tokenizer.json: {e}")))?;
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_token: "[PAD]".to_string(),
        ..PaddingParams::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams { max_length: TOKENS_MAX, ..TruncationParams::default() }))
        .map_err(|e| EmbedError::invalid_model(dir, format!("tokenizer truncation: {e}")))?;
    Ok(tokenizer)
}

/// Averages `hidden` (batch, tokens, dims) over the tokens whose `mask` (batch, tokens) is
/// non-zero, giving (batch, dims).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(MASK_SUM_MIN, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Scales each row of `x` (batch, dims) to unit L2 norm.
pub fn l2_normalize_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norms = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(NORM_MIN, f64::MAX)?;
    x.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_masked_tokens() {
        // Two texts, three tokens, two dims; the second text has one padding token whose
        // hidden state is huge and must not leak into the mean.
        let hidden = Tensor::new(
            &[[[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]], [[2.0, 0.0], [4.0, 2.0], [1000.0, -1000.0]]],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![3.0, 1.0]]);
    }

    #[test]
    fn mean_pool_of_all_padding_is_finite() {
        let hidden = Tensor::ones((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let mask = Tensor::zeros((1, 2), DType::U32, &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert!(pooled[0].iter().all(|x| *x == 0.0));
    }

    #[test]
    fn rows_are_normalised() {
        let x = Tensor::new(&[[3.0f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let n = l2_normalize_rows(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn load_rejects_a_folder_without_model() {
        let dir = tempfile::tempdir().unwrap();
        let err = BertEmbedder::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
