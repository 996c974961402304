//! DeBERTa-v2 weights: [`load`] from a Hugging Face safetensors file (with or without the
//! `deberta.` prefix), [`to_hf`] back to HF names and layouts, and [`encoder_shapes`] (what
//! freezing, layer-wise LR decay and random initialisation enumerate).

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::DebertaOptions;
use super::names::{
    CONV, CONV_LAYER_NORM, EMBED_PROJ, NAMES, POS_KEY_PROJ, POS_QUERY_PROJ, REL_EMBEDDINGS,
    REL_LAYER_NORM,
};
use super::{ConvBlock, DebertaEmbeddings, DebertaLayer, DebertaV2, DisentangledAttention};
use crate::error::{Error, Result};
use crate::model::backbone::{Backbone, LinearRole};
use crate::model::bert::{activation_for, dropout};
use crate::model::config::BertConfig;
use crate::model::weights::{
    DropoutOverride, HfTensor, WeightFile, emb_to_hf, linear_to_hf, ln_to_hf, param_id, to_vec,
    transpose,
};

/// A parameter whose id is [`param_id`] of its HF name (so optimizer state and freezing find
/// it, as for BERT's parameters).
fn param<const D: usize>(name: &str, data: TensorData, device: &Device) -> Param<Tensor<D>> {
    let (_, value, mapper) = Param::<Tensor<D>>::from_data(data, device).consume();
    Param::from_mapped_value(param_id(name), value, mapper)
}

/// Options of `config`, as an error naming the key when it holds a value tunekit cannot run
/// (also checked when `config.json` is read).
pub fn options(config: &BertConfig) -> Result<DebertaOptions> {
    DebertaOptions::from_config(config).map_err(|m| Error::Model(format!("config.json: {m}")))
}

/// A linear module without bias (`embed_proj`), HF `[out, in]` → burn `[in, out]`.
fn linear_no_bias(
    file: &mut WeightFile,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Linear> {
    let w = file.read(&format!("{name}.weight"), &[d_out, d_in])?;
    Ok(Linear {
        weight: param(
            &format!("{name}.weight"),
            TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]),
            device,
        ),
        bias: None,
    })
}

/// Load a DeBERTa-v2 encoder of `config` from `file`.
pub fn load(
    file: &mut WeightFile,
    config: &BertConfig,
    drop: DropoutOverride,
    device: &Device,
) -> Result<DebertaV2> {
    let opts = options(config)?;
    let h = config.hidden_size;
    let e = config.embedding_width();
    let eps = config.layer_norm_eps;
    let hidden_p = drop.hidden.unwrap_or(config.hidden_dropout_prob);
    let attn_p = drop
        .attention
        .unwrap_or(config.attention_probs_dropout_prob);
    let prefix = file.encoder_name("");
    let p = |s: &str| format!("{prefix}{s}");
    let n = &NAMES;
    let embeddings = DebertaEmbeddings {
        word_embeddings: file.embedding(&p(n.word_embeddings), config.vocab_size, e, device)?,
        position_embeddings: match opts.position_biased_input {
            true => Some(file.embedding(
                &p(n.position_embeddings),
                config.max_position_embeddings,
                e,
                device,
            )?),
            false => None,
        },
        token_type_embeddings: match config.type_vocab_size {
            0 => None,
            rows => {
                Some(file.embedding(&p("embeddings.token_type_embeddings"), rows, e, device)?)
            }
        },
        embed_proj: match e != h {
            true => Some(linear_no_bias(file, &p(EMBED_PROJ), e, h, device)?),
            false => None,
        },
        layer_norm: file.layer_norm(&p(n.embeddings_layer_norm), h, eps, device)?,
        dropout: dropout(hidden_p),
    };
    let rel_embeddings = match opts.relative_attention {
        true => Some(file.embedding(&p(REL_EMBEDDINGS), 2 * opts.att_span(), h, device)?),
        false => None,
    };
    let rel_layer_norm = match opts.norm_rel_ebd {
        true => Some(file.layer_norm(&p(REL_LAYER_NORM), h, eps, device)?),
        false => None,
    };
    let conv = match opts.conv {
        Some(c) => {
            let k = c.kernel_size;
            let name = format!("{}.weight", p(CONV));
            let w = file.read(&name, &[h, h, k])?;
            // HF [out, in, k] → [k, in, out].
            let mut kio = vec![0.0f32; w.len()];
            for o in 0..h {
                for i in 0..h {
                    for j in 0..k {
                        kio[(j * h + i) * h + o] = w[(o * h + i) * k + j];
                    }
                }
            }
            let bname = format!("{}.bias", p(CONV));
            let b = file.read(&bname, &[h])?;
            Some(ConvBlock {
                weight: param(&name, TensorData::new(kio, [k, h, h]), device),
                bias: param(&bname, TensorData::new(b, [h]), device),
                layer_norm: file.layer_norm(&p(CONV_LAYER_NORM), h, eps, device)?,
                dropout: dropout(hidden_p),
                act: c.act,
            })
        }
        None => None,
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = p(&n.layer_prefix(i));
        let lin = |role| format!("{l}.{}", n.linear_module(role));
        let separate = opts.relative_attention && !opts.share_att_key;
        let attention = DisentangledAttention {
            query_proj: file.linear(&lin(LinearRole::Query), h, h, device)?,
            key_proj: file.linear(&lin(LinearRole::Key), h, h, device)?,
            value_proj: file.linear(&lin(LinearRole::Value), h, h, device)?,
            pos_key_proj: match separate && opts.c2p {
                true => Some(file.linear(&format!("{l}.{POS_KEY_PROJ}"), h, h, device)?),
                false => None,
            },
            pos_query_proj: match separate && opts.p2c {
                true => Some(file.linear(&format!("{l}.{POS_QUERY_PROJ}"), h, h, device)?),
                false => None,
            },
            output: file.linear(&lin(LinearRole::AttentionOutput), h, h, device)?,
            layer_norm: file.layer_norm(
                &format!("{l}.{}", n.attention_layer_norm),
                h,
                eps,
                device,
            )?,
            pos_dropout: dropout(hidden_p),
            attention_dropout: dropout(attn_p),
            dropout: dropout(hidden_p),
            num_heads: config.num_attention_heads,
        };
        layers.push(DebertaLayer {
            attention,
            intermediate: file.linear(
                &lin(LinearRole::Intermediate),
                h,
                config.intermediate_size,
                device,
            )?,
            output: file.linear(
                &lin(LinearRole::Output),
                config.intermediate_size,
                h,
                device,
            )?,
            layer_norm: file.layer_norm(&format!("{l}.{}", n.output_layer_norm), h, eps, device)?,
            dropout: dropout(hidden_p),
            activation: activation_for(config),
        });
    }
    Ok(DebertaV2 {
        embeddings,
        layers,
        rel_embeddings,
        rel_layer_norm,
        conv,
        options: opts,
        max_position_embeddings: config.max_position_embeddings,
        lora_dropout: 0.0,
        layer_norm_eps: eps,
        precision: crate::model::bf16::Precision::F32,
        int8: None,
    })
}

/// The encoder's tensors with HF names (prefix `deberta.`) and layouts.
pub fn to_hf(out: &mut Vec<HfTensor>, m: &DebertaV2) -> Result<()> {
    let n = &NAMES;
    let p = |s: &str| format!("{}{s}", n.prefix);
    let e = &m.embeddings;
    emb_to_hf(out, &p(n.word_embeddings), &e.word_embeddings)?;
    if let Some(t) = &e.position_embeddings {
        emb_to_hf(out, &p(n.position_embeddings), t)?;
    }
    if let Some(t) = &e.token_type_embeddings {
        emb_to_hf(out, &p("embeddings.token_type_embeddings"), t)?;
    }
    if let Some(l) = &e.embed_proj {
        linear_to_hf(out, &p(EMBED_PROJ), l)?;
    }
    ln_to_hf(out, &p(n.embeddings_layer_norm), &e.layer_norm)?;
    if let Some(t) = &m.rel_embeddings {
        emb_to_hf(out, &p(REL_EMBEDDINGS), t)?;
    }
    if let Some(ln) = &m.rel_layer_norm {
        ln_to_hf(out, &p(REL_LAYER_NORM), ln)?;
    }
    if let Some(c) = &m.conv {
        let [k, d_in, d_out] = c.weight.val().dims();
        let kio = to_vec(c.weight.val())?;
        let mut oik = vec![0.0f32; kio.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                for j in 0..k {
                    oik[(o * d_in + i) * k + j] = kio[(j * d_in + i) * d_out + o];
                }
            }
        }
        out.push((format!("{}.weight", p(CONV)), vec![d_out, d_in, k], oik));
        out.push((
            format!("{}.bias", p(CONV)),
            vec![d_out],
            to_vec(c.bias.val())?,
        ));
        ln_to_hf(out, &p(CONV_LAYER_NORM), &c.layer_norm)?;
    }
    for (i, layer) in m.layers.iter().enumerate() {
        let l = p(&n.layer_prefix(i));
        for role in LinearRole::ALL {
            linear_to_hf(out, &p(&m.linear_name(i, role)), m.linear(i, role))?;
        }
        let a = &layer.attention;
        if let Some(pk) = &a.pos_key_proj {
            linear_to_hf(out, &format!("{l}.{POS_KEY_PROJ}"), pk)?;
        }
        if let Some(pq) = &a.pos_query_proj {
            linear_to_hf(out, &format!("{l}.{POS_QUERY_PROJ}"), pq)?;
        }
        ln_to_hf(
            out,
            &format!("{l}.{}", n.attention_layer_norm),
            &a.layer_norm,
        )?;
        ln_to_hf(
            out,
            &format!("{l}.{}", n.output_layer_norm),
            &layer.layer_norm,
        )?;
    }
    Ok(())
}

/// Names (without the prefix) and HF shapes of a DeBERTa-v2 encoder's tensors; an invalid
/// config (refused when `config.json` is read) gives those of its BERT-compatible part.
pub fn encoder_shapes(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let n = &NAMES;
    let (h, inter) = (config.hidden_size, config.intermediate_size);
    let e = config.embedding_width();
    let opts = DebertaOptions::from_config(config).ok();
    let w = |name: &str| format!("{name}.weight");
    let b = |name: &str| format!("{name}.bias");
    let mut out = vec![(w(n.word_embeddings), vec![config.vocab_size, e])];
    if opts.as_ref().is_none_or(|o| o.position_biased_input) {
        out.push((
            w(n.position_embeddings),
            vec![config.max_position_embeddings, e],
        ));
    }
    if config.type_vocab_size > 0 {
        out.push((
            w("embeddings.token_type_embeddings"),
            vec![config.type_vocab_size, e],
        ));
    }
    if e != h {
        out.push((w(EMBED_PROJ), vec![h, e]));
    }
    out.push((w(n.embeddings_layer_norm), vec![h]));
    out.push((b(n.embeddings_layer_norm), vec![h]));
    if let Some(o) = &opts {
        if o.relative_attention {
            out.push((w(REL_EMBEDDINGS), vec![2 * o.att_span(), h]));
        }
        if o.norm_rel_ebd {
            out.push((w(REL_LAYER_NORM), vec![h]));
            out.push((b(REL_LAYER_NORM), vec![h]));
        }
        if let Some(c) = o.conv {
            out.push((w(CONV), vec![h, h, c.kernel_size]));
            out.push((b(CONV), vec![h]));
            out.push((w(CONV_LAYER_NORM), vec![h]));
            out.push((b(CONV_LAYER_NORM), vec![h]));
        }
    }
    let separate = opts
        .as_ref()
        .filter(|o| o.relative_attention && !o.share_att_key);
    for l in 0..config.num_hidden_layers {
        for role in LinearRole::ALL {
            let shape = match role {
                LinearRole::Intermediate => vec![inter, h],
                LinearRole::Output => vec![h, inter],
                _ => vec![h, h],
            };
            let name = n.linear(l, role);
            out.push((b(&name), vec![shape[0]]));
            out.push((w(&name), shape));
        }
        let lp = n.layer_prefix(l);
        if let Some(o) = separate {
            for (on, module) in [(o.c2p, POS_KEY_PROJ), (o.p2c, POS_QUERY_PROJ)] {
                if on {
                    out.push((format!("{lp}.{module}.weight"), vec![h, h]));
                    out.push((format!("{lp}.{module}.bias"), vec![h]));
                }
            }
        }
        for ln in [n.attention_layer_norm, n.output_layer_norm] {
            out.push((format!("{lp}.{ln}.weight"), vec![h]));
            out.push((format!("{lp}.{ln}.bias"), vec![h]));
        }
    }
    out
}
