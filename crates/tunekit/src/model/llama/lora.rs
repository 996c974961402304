//! LoRA on llama-style decoders, in PEFT's names and layout.
//!
//! Adapters attach to the projections PEFT names `q_proj k_proj v_proj o_proj gate_proj
//! up_proj down_proj` (`model.layers.{i}.self_attn.*`, `model.layers.{i}.mlp.*`) with burn's
//! LoRA reparameterisation (`W + (alpha / r) · A·B`; A from burn's default N(0, (1/r)²), where
//! PEFT draws Kaiming-uniform; B = 0; every base tensor frozen: PEFT's
//! `bias = "none"`). `[strategy.lora] targets` names projections by role, as for encoders:
//! `query` → `q_proj`, `key` → `k_proj`, `value` → `v_proj`, `output` → `o_proj` and
//! `down_proj` (the two output projections, as BERT's `output.dense`), `intermediate` →
//! `gate_proj` and `up_proj`. The default (`query`, `value`) is PEFT's default for llama.
//!
//! Files are PEFT's: `adapter_model.safetensors` with
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` `[r, in]` and
//! `…lora_B.weight` `[out, r]`, and `adapter_config.json` with `task_type = "CAUSAL_LM"`, so
//! `peft.PeftModel.from_pretrained` loads a tunekit adapter and tunekit loads PEFT's.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Lora, Module, ParamGroup, ParamId};
use burn::nn::Linear;
use burn::tensor::Device;

use super::Llama;
use crate::error::{Error, Result};
use crate::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, LoraOptions, LoraTarget};
use crate::model::weights::{HfTensor, WeightFile, param_id, to_vec, transpose, write_safetensors};

/// Every projection an adapter can attach to, in PEFT's names and layer order.
pub const MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// PEFT module names of a role-named target (see the module docs).
pub fn target_modules(target: LoraTarget) -> &'static [&'static str] {
    match target {
        LoraTarget::Query => &["q_proj"],
        LoraTarget::Key => &["k_proj"],
        LoraTarget::Value => &["v_proj"],
        LoraTarget::Output => &["o_proj", "down_proj"],
        LoraTarget::Intermediate => &["gate_proj", "up_proj"],
    }
}

/// Sorted, de-duplicated PEFT module names of `targets`.
pub fn modules_of(targets: &[LoraTarget]) -> Vec<String> {
    let mut out: Vec<String> = targets
        .iter()
        .flat_map(|&t| target_modules(t).iter().map(|m| m.to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The linear modules of every layer with their HF names
/// (`model.layers.{i}.self_attn.q_proj`, …), in layer order.
pub fn named_linears(model: &Llama) -> Vec<(String, &'static str, &Linear)> {
    let mut out = Vec::with_capacity(model.layers.len() * MODULES.len());
    for (i, l) in model.layers.iter().enumerate() {
        let attn = format!("model.layers.{i}.self_attn");
        let mlp = format!("model.layers.{i}.mlp");
        out.push((format!("{attn}.q_proj"), "q_proj", &l.q_proj));
        out.push((format!("{attn}.k_proj"), "k_proj", &l.k_proj));
        out.push((format!("{attn}.v_proj"), "v_proj", &l.v_proj));
        out.push((format!("{attn}.o_proj"), "o_proj", &l.o_proj));
        out.push((format!("{mlp}.gate_proj"), "gate_proj", &l.gate_proj));
        out.push((format!("{mlp}.up_proj"), "up_proj", &l.up_proj));
        out.push((format!("{mlp}.down_proj"), "down_proj", &l.down_proj));
    }
    out
}

/// Attach adapters of rank `rank` and scale `alpha / rank` to the projections named
/// `modules` (PEFT names) in every layer: A ~ N(0, (1/r)²) from the device's RNG (seed it
/// first), B = 0, so the model is unchanged at first; every base tensor is frozen.
///
/// # Errors
/// [`Error::Config`] for a module name that is not one of [`MODULES`], or no module at all.
pub fn apply(model: Llama, rank: usize, alpha: f64, modules: &[String]) -> Result<Llama> {
    if modules.is_empty() {
        return Err(Error::Config(
            "LoRA needs at least one target module".into(),
        ));
    }
    if rank == 0 || !(alpha > 0.0 && alpha.is_finite()) {
        return Err(Error::Config(format!(
            "LoRA needs a rank of at least 1 and a positive finite alpha, got r = {rank}, alpha = {alpha}"
        )));
    }
    if let Some(bad) = modules.iter().find(|m| !MODULES.contains(&m.as_str())) {
        return Err(Error::Config(format!(
            "LoRA target module {bad:?} is not a llama projection ({})",
            MODULES.join(", ")
        )));
    }
    let targets: Vec<ParamId> = named_linears(&model)
        .into_iter()
        .filter(|(_, short, _)| modules.iter().any(|m| m == short))
        .map(|(name, _, _)| param_id(&format!("{name}.weight")))
        .collect();
    let lora = Lora::new(rank, alpha).set_param_group(ParamGroup::from_ids(targets));
    Ok(model
        .apply_lora(lora)
        .map(&mut crate::model::lora::StableFactorIds::default()))
}

/// Adapter factors in PEFT layout (`lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`).
pub fn adapter_tensors(model: &Llama) -> Result<Vec<HfTensor>> {
    crate::model::lora::factor_tensors(hf_linears(model))
}

/// [`named_linears`] as (HF name, layer) pairs, what the shared adapter I/O reads.
fn hf_linears(model: &Llama) -> impl Iterator<Item = (String, &Linear)> {
    named_linears(model).into_iter().map(|(n, _, l)| (n, l))
}

/// PEFT module names that carry adapters in `model`, sorted.
pub fn adapted_modules(model: &Llama) -> Vec<String> {
    let mut out: Vec<String> = named_linears(model)
        .into_iter()
        .filter(|(_, _, l)| l.weight.adapter().is_some())
        .map(|(_, short, _)| short.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Write `dir/adapter_model.safetensors` and `dir/adapter_config.json` (atomically) for
/// adapters of `opts` trained on the base model at `base` (a `.gguf` file or a directory).
pub fn save_adapter(model: &Llama, opts: &LoraOptions, base: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_safetensors(adapter_tensors(model)?, &dir.join(ADAPTER_WEIGHTS))?;
    crate::fsutil::write_json(
        &dir.join(ADAPTER_CONFIG),
        &adapter_config(&adapted_modules(model), opts, base),
    )
}

/// PEFT's `adapter_config.json` for adapters of `opts` on the projections `modules` (PEFT
/// names) of the base model at `base`.
pub fn adapter_config(modules: &[String], opts: &LoraOptions, base: &Path) -> AdapterConfig {
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    AdapterConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        base_model_name_or_path: base.display().to_string(),
        r: opts.rank,
        lora_alpha: opts.alpha,
        lora_dropout: opts.dropout,
        target_modules: modules.to_vec(),
        modules_to_save: Vec::new(),
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        tunekit_targets: opts.targets.clone(),
        use_rslora: false,
        use_dora: false,
        rank_pattern: Default::default(),
        alpha_pattern: Default::default(),
    }
}

/// Load the factors of `path` (PEFT names) into `model`, which must carry the same adapters
/// ([`apply`]). Every tensor of the file must be used.
///
/// # Errors
/// A missing tensor, a shape that differs, or a tensor of the file no adapter takes.
pub fn load_adapter(model: Llama, path: &Path, device: &Device) -> Result<Llama> {
    let mut file = WeightFile::open(path)?;
    let mut values = HashMap::new();
    crate::model::lora::read_factors(&mut file, hf_linears(&model), &mut values)?;
    let unused = file.unused();
    if !unused.is_empty() {
        return Err(Error::Model(format!(
            "{}: tensors this model has no adapter for: {unused:?} (different targets or layers?)",
            path.display()
        )));
    }
    crate::model::lora::load_values(model, values, device)
}

/// Read `dir/adapter_config.json` and attach its adapters (with their weights) to `model`.
/// Adapters written by PEFT load when tunekit can represent them exactly.
///
/// # Errors
/// [`Error::Model`] naming the file for an adapter of another kind (DoRA, rank patterns,
/// biases, unknown modules) or weights that do not fit.
pub fn attach(model: Llama, dir: &Path, device: &Device) -> Result<(Llama, AdapterConfig)> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let cfg: AdapterConfig = crate::fsutil::read_json(&config_path)?;
    let bad = |why: String| Error::Model(format!("{}: {why}", config_path.display()));
    if !cfg.modules_to_save.is_empty() {
        return Err(bad(format!(
            "modules_to_save = {:?}: a decoder adapter without saved modules is supported",
            cfg.modules_to_save
        )));
    }
    let alpha = cfg.burn_alpha().map_err(bad)?;
    let model = apply(model, cfg.r, alpha, &cfg.target_modules).map_err(|e| bad(e.to_string()))?;
    let model = load_adapter(model, &dir.join(ADAPTER_WEIGHTS), device)?;
    Ok((model, cfg))
}

/// The base tensors of `model` in HF names and layout (`[out, in]` linear weights), with the
/// adapters merged in (`W + (alpha / r) · A·B`): what a merged export writes.
pub fn merged_tensors(model: &Llama) -> Result<Vec<HfTensor>> {
    let mut out = Vec::new();
    let mut linear = |name: &str, l: &Linear| -> Result<()> {
        // `val()` of a reparameterised weight is the merged matrix, [in, out].
        let w = l.weight.val();
        let [d_in, d_out] = w.dims();
        out.push((
            format!("{name}.weight"),
            vec![d_out, d_in],
            transpose(&to_vec(w)?, d_in, d_out),
        ));
        if let Some(b) = &l.bias {
            out.push((format!("{name}.bias"), vec![d_out], to_vec(b.val())?));
        }
        Ok(())
    };
    let emb = model.embed_tokens.weight.val();
    let shape = emb.dims().to_vec();
    let emb_values = to_vec(emb)?;
    for (name, _, l) in named_linears(model) {
        linear(&name, l)?;
    }
    if let Some(head) = &model.lm_head {
        linear("lm_head", head)?;
    }
    out.push(("model.embed_tokens.weight".into(), shape, emb_values));
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let mut norm = |n: &str, w: &burn::module::Param<burn::tensor::Tensor<1>>| -> Result<()> {
            let v = to_vec(w.val())?;
            out.push((format!("{p}.{n}.weight"), vec![v.len()], v));
            Ok(())
        };
        norm("input_layernorm", &l.input_layernorm)?;
        norm("post_attention_layernorm", &l.post_attention_layernorm)?;
        if let Some(q) = &l.q_norm {
            norm("self_attn.q_norm", q)?;
        }
        if let Some(k) = &l.k_norm {
            norm("self_attn.k_norm", k)?;
        }
    }
    let v = to_vec(model.norm.val())?;
    out.push(("model.norm.weight".into(), vec![v.len()], v));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::formula_model;

    #[test]
    fn attach_reads_peft_configs_with_nulls_and_rslora_and_refuses_rank_zero() {
        let device = Device::flex();
        device.seed(1);
        let model = apply(formula_model(&device), 2, 4.0, &["q_proj".to_string()]).unwrap();
        // Non-zero B so the loaded adapter is visible.
        let mut values = HashMap::new();
        for (_, _, l) in named_linears(&model) {
            if let Some(a) = l.weight.adapter() {
                let [r, out] = a.b.val().dims();
                values.insert(a.b.id, (vec![r, out], vec![0.25; r * out]));
            }
        }
        let model = crate::model::lora::load_values(model, values, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(
            adapter_tensors(&model).unwrap(),
            &dir.path().join(ADAPTER_WEIGHTS),
        )
        .unwrap();
        // What PEFT 0.17 writes: nulls for unset options, rsLoRA on.
        let config = |r: usize| {
            serde_json::json!({
                "peft_type": "LORA", "task_type": null, "base_model_name_or_path": null,
                "r": r, "lora_alpha": 4.0, "lora_dropout": 0.0, "target_modules": ["q_proj"],
                "modules_to_save": null, "bias": "none", "fan_in_fan_out": false,
                "inference_mode": true, "use_rslora": true, "use_dora": false,
                "rank_pattern": {}, "alpha_pattern": {}, "lora_bias": false
            })
        };
        std::fs::write(dir.path().join(ADAPTER_CONFIG), config(2).to_string()).unwrap();
        let (loaded, cfg) = attach(formula_model(&device), dir.path(), &device).unwrap();
        assert!(cfg.modules_to_save.is_empty());
        let a = loaded.layers[0].q_proj.weight.adapter().unwrap();
        // rsLoRA: alpha / √r.
        assert!((a.scale - 4.0 / 2f64.sqrt()).abs() < 1e-12, "{}", a.scale);
        let b = to_vec(a.b.val()).unwrap();
        assert!(b.iter().all(|&v| v == 0.25));
        std::fs::write(dir.path().join(ADAPTER_CONFIG), config(0).to_string()).unwrap();
        let e = attach(formula_model(&device), dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("adapter_config.json") && e.contains("rank"),
            "{e}"
        );
    }
}
