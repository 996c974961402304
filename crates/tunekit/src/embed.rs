//! Sentence embeddings as sentence-transformers makes them: the pooling, maximum length and
//! normalisation a model directory's sentence-transformers files ask for (`modules.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`, a `Normalize` module), shared by
//! `tunekit embed` and `tunekit serve`'s `/embed` so the two always agree.
//!
//! Without sentence-transformers files a directory gets mean pooling (what
//! `SentenceTransformer(dir)` builds for a plain transformers model), unit vectors (the
//! default of text-embeddings-inference, whose `/embed` tunekit serves), and the maximum
//! length of `tunekit.json` (a model tunekit trained) or
//! `min(model_max_length, max_position_embeddings)`.
//! `tokenizer.json`'s own truncation and padding settings are never used (see
//! [`crate::tokenize::TextTokenizer::from_file`]).

use std::path::Path;

use burn::tensor::{Device, Tensor};
use serde::Deserialize;

use crate::batch::{collate, eval_batches};
use crate::error::{Error, Result};
use crate::model::BertConfig;
use crate::model::bert::{cls_token, mean_pool};
use crate::model::weights::to_vec;
use crate::tokenize::Tokens;

/// How token vectors become one sentence vector (sentence-transformers' pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedPooling {
    /// Masked mean of the token vectors (`pooling_mode_mean_tokens`).
    Mean,
    /// The first token's vector (`pooling_mode_cls_token`; the raw hidden state, no pooler).
    Cls,
    /// Element-wise maximum over the real tokens (`pooling_mode_max_tokens`).
    Max,
    /// Masked sum divided by √(token count) (`pooling_mode_mean_sqrt_len_tokens`).
    MeanSqrtLen,
    /// The last real token's vector (`pooling_mode_lasttoken`).
    LastToken,
}

impl EmbedPooling {
    /// Every mode, with its name.
    pub const ALL: [(&'static str, EmbedPooling); 5] = [
        ("mean", EmbedPooling::Mean),
        ("cls", EmbedPooling::Cls),
        ("max", EmbedPooling::Max),
        ("mean_sqrt_len", EmbedPooling::MeanSqrtLen),
        ("lasttoken", EmbedPooling::LastToken),
    ];

    /// The mode's name (`mean`, `cls`, `max`, `mean_sqrt_len`, `lasttoken`).
    pub fn name(self) -> &'static str {
        EmbedPooling::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("mean", |(n, _)| n)
    }
}

impl std::str::FromStr for EmbedPooling {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        EmbedPooling::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let names: Vec<&str> = EmbedPooling::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown pooling `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// What a caller overrides of the model's own embedding configuration.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// Max length in tokens (default: the model's).
    pub max_length: Option<usize>,
    /// Pooling (default: the model's).
    pub pooling: Option<EmbedPooling>,
    /// Raw pooled vectors: no `Normalize`, and modules tunekit does not run (e.g. `Dense`)
    /// are skipped instead of refused.
    pub raw: bool,
}

/// How a model's sentence embeddings are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Pooling mode.
    pub pooling: EmbedPooling,
    /// L2-normalise the pooled vectors (sentence-transformers' `Normalize` module).
    pub normalize: bool,
    /// Max length in tokens (longer inputs are truncated and counted).
    pub max_length: usize,
    /// Where the configuration came from, for messages.
    pub source: String,
}

#[derive(Deserialize)]
struct StModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    /// sentence-transformers ≥ 6: `"mean"`, or a list of modes (concatenated).
    #[serde(default)]
    pooling_mode: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StTransformer {
    #[serde(default)]
    max_seq_length: Option<usize>,
    /// sentence-transformers lower-cases every text before tokenising when set.
    #[serde(default)]
    do_lower_case: bool,
}

/// What a directory's sentence-transformers files say: pooling (when a `Pooling` module is
/// listed), normalisation, max length (when `sentence_bert_config.json` gives one).
type StConfig = (Option<EmbedPooling>, bool, Option<usize>);

/// The sentence-transformers files of `dir`, if it has `modules.json`.
fn sentence_transformers_config(dir: &Path, raw: bool) -> Result<Option<StConfig>> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(None);
    }
    let modules: Vec<StModule> = crate::fsutil::read_json(&modules_path)?;
    let (mut pooling, mut normalize, mut max_length) = (None, false, None);
    for m in &modules {
        // `sentence_transformers.models.Pooling` and later module paths end the same way.
        let kind = m.kind.rsplit('.').next().unwrap_or_default();
        match kind {
            "Transformer" => {
                let p = dir.join(&m.path).join("sentence_bert_config.json");
                if p.is_file() {
                    let t: StTransformer = crate::fsutil::read_json(&p)?;
                    // Not applied here: refused rather than embedding other text than
                    // sentence-transformers would (never silently different vectors).
                    if t.do_lower_case && !raw {
                        return Err(Error::Model(format!(
                            "{}: do_lower_case = true (sentence-transformers lower-cases texts before tokenising) is not supported yet; lower-case the input yourself and pass --raw with --pooling",
                            p.display()
                        )));
                    }
                    max_length = t.max_seq_length;
                }
            }
            "Pooling" => {
                let p = dir.join(&m.path).join("config.json");
                let c: StPooling = crate::fsutil::read_json(&p)?;
                let on: Vec<Option<EmbedPooling>> = match &c.pooling_mode {
                    Some(mode) => {
                        let names: Vec<&str> = match mode {
                            serde_json::Value::String(m) => vec![m.as_str()],
                            serde_json::Value::Array(v) => {
                                v.iter().filter_map(serde_json::Value::as_str).collect()
                            }
                            _ => Vec::new(),
                        };
                        let mut on = Vec::new();
                        for name in names {
                            on.push(match name {
                                "mean" => Some(EmbedPooling::Mean),
                                "cls" => Some(EmbedPooling::Cls),
                                "max" => Some(EmbedPooling::Max),
                                "mean_sqrt_len_tokens" => Some(EmbedPooling::MeanSqrtLen),
                                "lasttoken" => Some(EmbedPooling::LastToken),
                                "weightedmean" => None,
                                other => {
                                    return Err(Error::Model(format!(
                                        "{}: unknown pooling_mode `{other}`",
                                        p.display()
                                    )));
                                }
                            });
                        }
                        on
                    }
                    None => [
                        (c.pooling_mode_mean_tokens, Some(EmbedPooling::Mean)),
                        (c.pooling_mode_cls_token, Some(EmbedPooling::Cls)),
                        (c.pooling_mode_max_tokens, Some(EmbedPooling::Max)),
                        (
                            c.pooling_mode_mean_sqrt_len_tokens,
                            Some(EmbedPooling::MeanSqrtLen),
                        ),
                        (c.pooling_mode_lasttoken, Some(EmbedPooling::LastToken)),
                        (c.pooling_mode_weightedmean_tokens, None),
                    ]
                    .iter()
                    .filter(|(b, _)| *b)
                    .map(|(_, p)| *p)
                    .collect(),
                };
                pooling = match on.as_slice() {
                    [Some(p)] => Some(*p),
                    [None] => {
                        return Err(Error::Model(format!(
                            "{}: weighted-mean pooling is not supported by tunekit (mean, cls, max, mean_sqrt_len, lasttoken are)",
                            p.display()
                        )));
                    }
                    [] => {
                        return Err(Error::Model(format!(
                            "{}: no pooling mode is on",
                            p.display()
                        )));
                    }
                    _ => {
                        return Err(Error::Model(format!(
                            "{}: several pooling modes are on (sentence-transformers concatenates them); tunekit supports one",
                            p.display()
                        )));
                    }
                };
            }
            "Normalize" => normalize = true,
            other if !raw => {
                return Err(Error::Model(format!(
                    "{}: module `{}` ({other}) is not run by tunekit (it runs Transformer, Pooling and Normalize), so its embeddings would differ from sentence-transformers'; pass --raw for the pooled encoder output",
                    modules_path.display(),
                    m.kind
                )));
            }
            _ => {}
        }
    }
    Ok(Some((pooling, normalize, max_length)))
}

/// `model_max_length` of `tokenizer_config.json` when it is a real limit (transformers writes
/// 1e30 for "none").
fn tokenizer_model_max_length(dir: &Path) -> Result<Option<usize>> {
    let p = dir.join("tokenizer_config.json");
    if !p.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = crate::fsutil::read_json(&p)?;
    Ok(v.get("model_max_length")
        .and_then(serde_json::Value::as_f64)
        .filter(|x| (1.0..1e9).contains(x))
        .map(|x| x as usize))
}

impl EmbeddingConfig {
    /// The embedding configuration of the model in `dir` (see the module docs), with
    /// `options`' overrides applied.
    pub fn resolve(dir: &Path, config: &BertConfig, options: &EmbedOptions) -> Result<Self> {
        let st = sentence_transformers_config(dir, options.raw)?;
        let meta_path = dir.join(crate::model::TUNEKIT_META);
        let meta_length = if meta_path.is_file() {
            let meta: crate::infer::ModelMeta = crate::fsutil::read_json(&meta_path)?;
            Some(meta.max_length)
        } else {
            None
        };
        let (st_pooling, st_normalize, st_length) = st.unwrap_or((None, true, None));
        let positions = config.max_sequence_length();
        let default_length = match tokenizer_model_max_length(dir)? {
            Some(n) => n.min(positions),
            None => positions.min(512),
        };
        let max_length = options
            .max_length
            .or(st_length)
            .or(meta_length)
            .unwrap_or(default_length);
        let source = if dir.join("modules.json").is_file() {
            "sentence-transformers config (modules.json)"
        } else {
            "no sentence-transformers config (modules.json): mean pooling, unit vectors"
        };
        Ok(EmbeddingConfig {
            pooling: options.pooling.or(st_pooling).unwrap_or(EmbedPooling::Mean),
            normalize: st_normalize && !options.raw,
            max_length,
            source: source.to_string(),
        })
    }
}

/// Pooled `[batch, hidden]` sentence vectors of hidden states `[batch, seq, hidden]` under
/// `mask` (`[batch, seq]`, 1 for real tokens; padding on the right, as
/// [`crate::batch::collate`] makes it).
pub fn pool(hidden: Tensor<3>, mask: Tensor<2>, pooling: EmbedPooling) -> Tensor<2> {
    let [batch, seq, _] = hidden.dims();
    match pooling {
        EmbedPooling::Mean => mean_pool(hidden, mask),
        EmbedPooling::Cls => cls_token(hidden),
        EmbedPooling::Max => {
            // sentence-transformers: padding positions set to -1e9, then the maximum.
            let m = mask.reshape([batch, seq, 1]);
            let masked = hidden * m.clone() + m.sub_scalar(1.0).mul_scalar(1e9);
            masked.max_dim(1).squeeze_dim::<2>(1)
        }
        EmbedPooling::MeanSqrtLen => {
            let m = mask.reshape([batch, seq, 1]);
            let summed = (hidden * m.clone()).sum_dim(1).squeeze_dim::<2>(1);
            let counts = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9).sqrt();
            summed / counts
        }
        EmbedPooling::LastToken => {
            // Right padding: the last real token is where the mask is 1 and the next
            // position's is 0 (or the row ends).
            let w = if seq > 1 {
                let next = Tensor::cat(
                    vec![
                        mask.clone().narrow(1, 1, seq - 1),
                        Tensor::zeros([batch, 1], &mask.device()),
                    ],
                    1,
                );
                mask.clone() - mask * next
            } else {
                mask
            };
            (hidden * w.reshape([batch, seq, 1]))
                .sum_dim(1)
                .squeeze_dim::<2>(1)
        }
    }
}

/// Scale a vector to unit L2 norm as sentence-transformers' `Normalize` does
/// (`x / max(‖x‖, 1e-12)`; a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    v.iter_mut()
        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
}

/// Sentence vectors of tokenised inputs (input order): `bert`'s last hidden states pooled
/// with `pooling`, L2-normalised when `normalize`. Batches of `batch_size` in length order.
/// Used by `tunekit embed` and by `tunekit serve`'s `/embed`.
pub fn embed_tokens(
    bert: &crate::model::Encoder,
    tokens: &[Tokens],
    pooling: EmbedPooling,
    normalize: bool,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let mut out = vec![Vec::new(); tokens.len()];
    for idx in eval_batches(&lengths, batch_size.max(1)) {
        let refs: Vec<&Tokens> = idx.iter().filter_map(|&i| tokens.get(i)).collect();
        let batch = collate(&refs, pad_id, device);
        let pooled = pool(bert.forward(&batch), batch.attention_mask.clone(), pooling);
        let [_, h] = pooled.dims();
        let v = to_vec(pooled)?;
        for (row, &i) in idx.iter().enumerate() {
            let (Some(slot), Some(values)) = (out.get_mut(i), v.get(row * h..(row + 1) * h)) else {
                return Err(Error::Engine(format!(
                    "embedding batch: row {row} missing from the pooled output"
                )));
            };
            *slot = values.to_vec();
            if normalize {
                l2_normalize(slot);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn hidden() -> (Tensor<3>, Tensor<2>) {
        let device = Device::flex();
        // Two rows of three positions, hidden size 2; row 1 has one padding position.
        let h = vec![
            1.0f32, -2.0, 3.0, 0.5, -1.0, 4.0, //
            2.0, 1.0, -3.0, 7.0, 100.0, 100.0,
        ];
        let m = vec![1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0];
        (
            Tensor::from_data(TensorData::new(h, [2, 3, 2]), &device),
            Tensor::from_data(TensorData::new(m, [2, 3]), &device),
        )
    }

    fn pooled(p: EmbedPooling) -> Vec<f32> {
        let (h, m) = hidden();
        to_vec(pool(h, m, p)).unwrap()
    }

    #[test]
    fn pooling_modes_compute_what_sentence_transformers_computes() {
        assert_eq!(pooled(EmbedPooling::Cls), vec![1.0, -2.0, 2.0, 1.0]);
        assert_eq!(pooled(EmbedPooling::Max), vec![3.0, 4.0, 2.0, 7.0]);
        assert_eq!(pooled(EmbedPooling::LastToken), vec![-1.0, 4.0, -3.0, 7.0]);
        let mean = pooled(EmbedPooling::Mean);
        let want = [1.0, 2.5 / 3.0, -0.5, 4.0];
        for (a, b) in mean.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{mean:?}");
        }
        let sqrt = pooled(EmbedPooling::MeanSqrtLen);
        let want = [
            3.0 / 3f32.sqrt(),
            2.5 / 3f32.sqrt(),
            -1.0 / 2f32.sqrt(),
            8.0 / 2f32.sqrt(),
        ];
        for (a, b) in sqrt.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{sqrt:?}");
        }
    }

    #[test]
    fn pooling_names_parse_and_unknown_ones_are_listed() {
        for (name, p) in EmbedPooling::ALL {
            assert_eq!(name.parse::<EmbedPooling>().unwrap(), p);
            assert_eq!(p.name(), name);
        }
        let e = "weighted".parse::<EmbedPooling>().unwrap_err();
        assert!(e.contains("mean, cls, max"), "{e}");
    }

    #[test]
    fn normalize_gives_unit_vectors_and_keeps_zero() {
        let mut v = vec![3.0f32, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        let mut z = vec![0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    #[test]
    fn sentence_transformers_files_decide_pooling_normalize_and_length() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let config: BertConfig = serde_json::from_value(serde_json::json!({
            "model_type": "bert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
            "num_attention_heads": 1, "intermediate_size": 4, "max_position_embeddings": 512
        }))
        .unwrap();
        // No sentence-transformers files: mean, unit vectors, tokenizer_config's length.
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"model_max_length": 300}"#,
        )
        .unwrap();
        let plain = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap();
        assert_eq!(
            (plain.pooling, plain.normalize, plain.max_length),
            (EmbedPooling::Mean, true, 300)
        );
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": false, "pooling_mode_max_tokens": true}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 256}"#,
        )
        .unwrap();
        let st = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap();
        assert_eq!(
            (st.pooling, st.normalize, st.max_length),
            (EmbedPooling::Max, true, 256)
        );
        let raw = EmbedOptions {
            max_length: Some(64),
            pooling: Some(EmbedPooling::Cls),
            raw: true,
        };
        let r = EmbeddingConfig::resolve(dir, &config, &raw).unwrap();
        assert_eq!(
            (r.pooling, r.normalize, r.max_length),
            (EmbedPooling::Cls, false, 64)
        );
        // sentence-transformers ≥ 6 writes the mode as a string.
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"embedding_dimension": 4, "pooling_mode": "lasttoken"}"#,
        )
        .unwrap();
        let st = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap();
        assert_eq!(st.pooling, EmbedPooling::LastToken);
        // A model that lower-cases its input is refused unless raw (never other vectors).
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 256, "do_lower_case": true}"#,
        )
        .unwrap();
        let e = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap_err();
        assert!(e.to_string().contains("do_lower_case"), "{e}");
        assert!(EmbeddingConfig::resolve(dir, &config, &raw).is_ok());
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 256}"#,
        )
        .unwrap();
        // Several modes on, and modules tunekit does not run, are refused by name.
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        let e = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap_err();
        assert!(e.to_string().contains("several pooling modes"), "{e}");
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        )
        .unwrap();
        let e = EmbeddingConfig::resolve(dir, &config, &EmbedOptions::default()).unwrap_err();
        assert!(e.to_string().contains("Dense"), "{e}");
    }
}
