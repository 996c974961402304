//! LoRA fine-tuning with burn's built-in LoRA reparameterization (`Module::apply_lora`):
//! target weight matrices become `W + (alpha / rank) · A·B` with only `A`, `B` and the head
//! (pooler + classifier) trained; everything else is frozen, biases included (PEFT's
//! `bias = "none"`).
//!
//! Adapters are saved in PEFT's layout (`adapter_model.safetensors` + `adapter_config.json`),
//! so a tunekit adapter loads with `peft.PeftModel.from_pretrained` and the other way round.
//!
//! Two things burn's LoRA does not do are handled here:
//! - parameter ids: burn gives adapter factors random ids, but optimiser state is keyed by id
//!   and a resumed run must find it again, so the factors get ids derived from their base
//!   weight's (stable, name-derived) id;
//! - dropout on the adapter input (PEFT's `lora_dropout`): burn composes the adapter into the
//!   weight, which leaves no input to drop, so the encoder adds the difference the dropout
//!   makes to the adapter's output itself ([`crate::model::bert::project`]) in training.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Lora, Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::backbone::{Backbone, LinearRole};
use super::family::Names;
use super::weights::{
    HeadKind, HfTensor, WeightFile, head_names, param_id, to_vec, transpose, write_safetensors,
};
use super::{BertConfig, SequenceClassifier};
use crate::error::{Error, Result};

/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// Which projections get adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// `attention.self.query`.
    Query,
    /// `attention.self.key`.
    Key,
    /// `attention.self.value`.
    Value,
    /// Both output projections: `attention.output.dense` and the feed-forward `output.dense`.
    Output,
    /// The feed-forward `intermediate.dense`.
    Intermediate,
}

impl LoraTarget {
    /// The linear modules (by role, in every layer) this target covers.
    fn roles(self) -> &'static [LinearRole] {
        match self {
            LoraTarget::Query => &[LinearRole::Query],
            LoraTarget::Key => &[LinearRole::Key],
            LoraTarget::Value => &[LinearRole::Value],
            LoraTarget::Output => &[LinearRole::AttentionOutput, LinearRole::Output],
            LoraTarget::Intermediate => &[LinearRole::Intermediate],
        }
    }

    /// Every target, in PEFT-name lookup order.
    const ALL: [LoraTarget; 5] = [
        LoraTarget::Query,
        LoraTarget::Key,
        LoraTarget::Value,
        LoraTarget::Output,
        LoraTarget::Intermediate,
    ];

    /// PEFT `target_modules` entries for a family (PEFT matches a module whose name equals an
    /// entry or ends with `.` + entry): for each role, the shortest dotted suffix of its
    /// module name that no layer module outside this target ends with — `query` / `value`
    /// for BERT and RoBERTa, `q_lin` / `v_lin` for DistilBERT, `q` / `v` for MPNet, and
    /// `output.dense` for BERT's two output projections together. A module that serves several
    /// roles (ModernBERT's fused `Wqkv`) is one module: the query, key and value targets all
    /// name it, and adapt all three projections.
    pub fn peft_names(self, names: &Names) -> Vec<String> {
        let own: Vec<&str> = self
            .roles()
            .iter()
            .map(|&r| names.linear_module(r))
            .collect();
        let outside: Vec<&str> = LinearRole::ALL
            .into_iter()
            .filter(|r| !self.roles().contains(r))
            .map(|r| names.linear_module(r))
            .filter(|m| !own.contains(m))
            .collect();
        let matches = |module: &str, suffix: &str| {
            module == suffix || module.ends_with(&format!(".{suffix}"))
        };
        let mut out: Vec<String> = Vec::new();
        for &role in self.roles() {
            let module = names.linear_module(role);
            let parts: Vec<&str> = module.split('.').collect();
            let suffix = (1..=parts.len())
                .map(|n| parts[parts.len() - n..].join("."))
                .find(|suffix| !outside.iter().any(|m| matches(m, suffix)))
                .unwrap_or_else(|| module.to_string());
            if !out.contains(&suffix) {
                out.push(suffix);
            }
        }
        out
    }

    /// The target a PEFT `target_modules` entry names in a family (BERT's `intermediate` too).
    pub fn from_peft_name(name: &str, names: &Names) -> Option<LoraTarget> {
        if name == "intermediate"
            && names.linear_module(LinearRole::Intermediate) == "intermediate.dense"
        {
            return Some(LoraTarget::Intermediate);
        }
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.peft_names(names).iter().any(|n| n == name))
    }
}

/// `[strategy.lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    /// Rank r of the update.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Scale numerator: the update is multiplied by alpha / r.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter input in training (PEFT's `lora_dropout`), in [0, 1).
    #[serde(default)]
    pub dropout: f64,
    /// Projections that get adapters (default query and value, as PEFT for BERT).
    #[serde(default = "default_targets")]
    pub targets: Vec<LoraTarget>,
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<LoraTarget> {
    vec![LoraTarget::Query, LoraTarget::Value]
}

impl LoraOptions {
    /// Check the options, naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rank == 0 {
            return Err("strategy.lora.rank must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!(
                "strategy.lora.alpha must be positive, got {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "strategy.lora.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if self.targets.is_empty() {
            return Err("strategy.lora.targets must name at least one projection".into());
        }
        Ok(())
    }

    /// HF names (without the base-model prefix, e.g. `bert.`) of the weight matrices of
    /// `backbone` that get adapters.
    pub fn target_weights(&self, backbone: &dyn Backbone) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..backbone.num_layers() {
            for t in &self.targets {
                for &role in t.roles() {
                    out.push(format!("{}.weight", backbone.linear_name(i, role)));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Id of an adapter factor (`which` = 1 for A, 2 for B), derived from its base weight's id.
fn factor_id(base: ParamId, which: u64) -> ParamId {
    let mut h = base.val() ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(which);
    h = (h ^ (h >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    ParamId::from(h ^ (h >> 33))
}

/// Gives adapter factors ids derived from their base weight (see the module docs).
#[derive(Default)]
pub(crate) struct StableFactorIds {
    last_base: Option<ParamId>,
    in_adapter: bool,
    field: String,
}

impl ModuleMapper for StableFactorIds {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.in_adapter = true;
        }
        self.field = name.to_string();
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.in_adapter = false;
        }
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match (self.in_adapter, self.last_base) {
            (true, Some(base)) => {
                param.id = factor_id(base, if self.field == "a" { 1 } else { 2 });
            }
            _ => self.last_base = Some(param.id),
        }
        param
    }
}

/// Parameter ids of a model's head (its pooler / dense layer and output linear, in the
/// family's names), which LoRA training keeps trainable.
pub fn head_ids(names: &Names, head: HeadKind) -> Vec<ParamId> {
    let (dense, out) = head_names(names, head);
    let mut tensors = vec![
        format!("{dense}.weight"),
        format!("{dense}.bias"),
        format!("{out}.weight"),
        format!("{out}.bias"),
    ];
    if let Some(norm) = names.sequence_head.norm {
        tensors.push(format!("{norm}.weight"));
        tensors.push(format!("{norm}.bias"));
    }
    tensors.iter().map(|n| param_id(n)).collect()
}

/// PEFT `modules_to_save` of a family's head: the top-level modules holding its dense layer
/// and output (`classifier` and `pooler` for BERT, `classifier` for RoBERTa,
/// `pre_classifier` and `classifier` for DistilBERT).
pub fn modules_to_save(names: &Names) -> Vec<String> {
    let head = &names.sequence_head;
    let mut out = vec!["classifier".to_string()];
    for module in [head.dense, head.out] {
        let top = module.split('.').next().unwrap_or(module).to_string();
        if !out.contains(&top) {
            out.push(top);
        }
    }
    out
}

/// Attach adapters to the target weights of `model` (A ~ N(0, 1/r) from the device's RNG,
/// B = 0, so the model is unchanged at first), freeze everything else except the head. The
/// targets are found in the model's backbone (`_config` is kept for callers).
pub fn apply(
    model: SequenceClassifier,
    opts: &LoraOptions,
    _config: &BertConfig,
) -> SequenceClassifier {
    let targets: Vec<ParamId> = opts
        .target_weights(&model.encoder)
        .iter()
        .map(|n| param_id(n))
        .collect();
    let lora = Lora::new(opts.rank, opts.alpha).set_param_group(ParamGroup::from_ids(targets));
    let mut model = model;
    model.encoder.set_lora_dropout(opts.dropout);
    let head = head_ids(model.encoder.names(), model.head);
    model
        .apply_lora(lora)
        .map(&mut StableFactorIds::default())
        .unfreeze_group(ParamGroup::from_ids(head))
}

/// The `Linear` modules of a model by full HF name (base-model prefix included, e.g.
/// `bert.encoder.layer.0.attention.self.query`), for adapter I/O.
fn linears(model: &SequenceClassifier) -> Vec<(String, &Linear)> {
    let prefix = model.encoder.prefix();
    model
        .encoder
        .named_linears()
        .into_iter()
        .map(|(name, l)| (format!("{prefix}{name}"), l))
        .collect()
}

const PEFT_PREFIX: &str = "base_model.model.";

/// Adapter factors in PEFT layout (`lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`)
/// plus the head (PEFT `modules_to_save`), with PEFT's names.
pub fn adapter_tensors(model: &SequenceClassifier) -> Result<Vec<HfTensor>> {
    let mut out = factor_tensors(linears(model))?;
    let mut head = Vec::new();
    super::weights::head_to_hf(&mut head, model)?;
    for (n, s, v) in head {
        out.push((format!("{PEFT_PREFIX}{n}"), s, v));
    }
    Ok(out)
}

/// The adapter factors of `linears` (full HF module name, layer) in PEFT's layout and names:
/// `base_model.model.{name}.lora_A.weight` `[r, in]` and `….lora_B.weight` `[out, r]`; layers
/// without an adapter give nothing. Shared by encoders and decoders.
pub(crate) fn factor_tensors<'a>(
    linears: impl IntoIterator<Item = (String, &'a Linear)>,
) -> Result<Vec<HfTensor>> {
    let mut out = Vec::new();
    for (name, linear) in linears {
        if let Some(adapter) = linear.weight.adapter() {
            // burn keeps A as [in, r] and B as [r, out]; PEFT's Linear weights are [out, in].
            let [d_in, r] = adapter.a.val().dims();
            let [_, d_out] = adapter.b.val().dims();
            out.push((
                format!("{PEFT_PREFIX}{name}.lora_A.weight"),
                vec![r, d_in],
                to_vec(adapter.a.val().transpose())?,
            ));
            out.push((
                format!("{PEFT_PREFIX}{name}.lora_B.weight"),
                vec![d_out, r],
                to_vec(adapter.b.val().transpose())?,
            ));
        }
    }
    Ok(out)
}

/// Read the factors of every adapted layer of `linears` from `file` (PEFT names, as
/// [`factor_tensors`] writes them) into `values`, keyed by the factors' parameter ids in burn's
/// layout. Returns how many tensors were read.
pub(crate) fn read_factors<'a>(
    file: &mut WeightFile,
    linears: impl IntoIterator<Item = (String, &'a Linear)>,
    values: &mut HashMap<ParamId, (Vec<usize>, Vec<f32>)>,
) -> Result<usize> {
    let mut read = 0;
    for (name, linear) in linears {
        let Some(adapter) = linear.weight.adapter() else {
            continue;
        };
        let [d_in, r] = adapter.a.val().dims();
        let [_, d_out] = adapter.b.val().dims();
        let a = file.read(&format!("{PEFT_PREFIX}{name}.lora_A.weight"), &[r, d_in])?;
        let b = file.read(&format!("{PEFT_PREFIX}{name}.lora_B.weight"), &[d_out, r])?;
        values.insert(adapter.a.id, (vec![d_in, r], transpose(&a, r, d_in)));
        values.insert(adapter.b.id, (vec![r, d_out], transpose(&b, d_out, r)));
        read += 2;
    }
    Ok(read)
}

/// Write the adapter weights (atomically).
pub fn save_adapter(model: &SequenceClassifier, path: &Path) -> Result<()> {
    write_safetensors(adapter_tensors(model)?, path)
}

/// Replaces the values of parameters found in a map by id, keeping everything else.
struct LoadById {
    values: HashMap<ParamId, (Vec<usize>, Vec<f32>)>,
    device: Device,
    loaded: usize,
}

impl ModuleMapper for LoadById {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((shape, values)) = self.values.remove(&param.id) else {
            return param;
        };
        self.loaded += 1;
        let trainable = param.is_require_grad();
        let id = param.id;
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &self.device);
        // `Param::map` keeps the id and training state; only the value changes.
        let param = param.map(|_| tensor).set_require_grad(trainable);
        debug_assert_eq!(param.id, id);
        param
    }
}

/// Load adapter factors and head weights saved by [`save_adapter`] into a model that has the
/// same adapters attached ([`apply`]). Every tensor of the file must be used.
pub fn load_adapter(
    model: SequenceClassifier,
    path: &Path,
    device: &Device,
) -> Result<SequenceClassifier> {
    let mut file = WeightFile::open(path)?;
    let mut values = HashMap::new();
    let mut expected = read_factors(&mut file, linears(&model), &mut values)?;
    let mut head = Vec::new();
    super::weights::head_to_hf(&mut head, &model)?;
    for (n, shape, _) in head {
        let key = format!("{PEFT_PREFIX}{n}");
        // PEFT's default `modules_to_save` for classification is the classifier only: then
        // the base model's pooler stays as it is.
        let names = model.encoder.names();
        let pooler = format!("{}{}.", names.prefix, names.sequence_head.dense);
        if names.sequence_head.dense_in_base && n.starts_with(&pooler) && !file.has(&key) {
            continue;
        }
        let v = file.read(&key, &shape)?;
        let id = param_id(&n);
        // HF Linear weights are [out, in]; burn's are [in, out].
        let (shape, v) = if shape.len() == 2 {
            (vec![shape[1], shape[0]], transpose(&v, shape[0], shape[1]))
        } else {
            (shape, v)
        };
        values.insert(id, (shape, v));
        expected += 1;
    }
    let unused = file.unused();
    if !unused.is_empty() {
        return Err(Error::Model(format!(
            "{}: tensors this model has no adapter for: {unused:?} (different targets or layers?)",
            path.display()
        )));
    }
    if values.len() != expected {
        return Err(Error::Model(format!(
            "{}: {} adapter/head tensors for {expected} parameters",
            path.display(),
            values.len()
        )));
    }
    load_values(model, values, device).map_err(|e| Error::Model(format!("{}: {e}", path.display())))
}

/// Replace the values of the parameters of `model` whose ids are keys of `values`
/// (`(shape, values)` in burn's layout); every entry must find its parameter.
///
/// # Errors
/// [`Error::Model`] when some entries found no parameter.
pub(crate) fn load_values<M: Module>(
    model: M,
    values: HashMap<ParamId, (Vec<usize>, Vec<f32>)>,
    device: &Device,
) -> Result<M> {
    let expected = values.len();
    let mut loader = LoadById {
        values,
        device: device.clone(),
        loaded: 0,
    };
    let model = model.map(&mut loader);
    if loader.loaded != expected {
        return Err(Error::Model(format!(
            "loaded {} of {expected} adapter tensors",
            loader.loaded
        )));
    }
    Ok(model)
}

/// Load a LoRA classifier for inference: the base model's weights, adapters attached as in
/// training, then the adapter factors and head from `adapter_dir`.
pub fn load_for_inference(
    adapter_dir: &Path,
    spec: &super::weights::ClassifierSpec,
    device: &Device,
) -> Result<(SequenceClassifier, AdapterConfig, super::ModelDir)> {
    let config_path = adapter_dir.join(ADAPTER_CONFIG);
    let adapter: AdapterConfig = crate::fsutil::read_json(&config_path)?;
    let base = super::ModelDir::open(&adapter.base_model_name_or_path).map_err(|e| {
        Error::Model(format!(
            "{}: base model {}: {e}",
            config_path.display(),
            adapter.base_model_name_or_path
        ))
    })?;
    let options = adapter
        .options(base.config.family().names())
        .map_err(|e| Error::Model(format!("{}: {e}", config_path.display())))?;
    let base_spec = super::weights::ClassifierSpec {
        require_head: false,
        ..spec.clone()
    };
    let (model, _) =
        super::weights::load_classifier(&base.weights_path(), &base.config, &base_spec, device)?;
    let model = apply(model, &options, &base.config);
    let model = load_adapter(model, &adapter_dir.join(ADAPTER_WEIGHTS), device)?;
    Ok((model, adapter, base))
}

/// A JSON `null` read as the type's default (PEFT writes `null` for unset options).
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// PEFT's `adapter_config.json` (the keys PEFT needs to load a LoRA adapter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// `SEQ_CLS`, `TOKEN_CLS`, `FEATURE_EXTRACTION`, `CAUSAL_LM` (PEFT may write `null`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub task_type: String,
    /// The base model directory (absolute) or file (PEFT may write `null`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub base_model_name_or_path: String,
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub lora_alpha: f64,
    /// Dropout (0).
    pub lora_dropout: f64,
    /// PEFT module-name suffixes.
    pub target_modules: Vec<String>,
    /// Trained and saved whole: the head (PEFT writes `null` for none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub modules_to_save: Vec<String>,
    /// Biases are not trained.
    pub bias: String,
    /// Weights are `[out, in]` (PyTorch `Linear`).
    pub fan_in_fan_out: bool,
    /// Saved for inference.
    pub inference_mode: bool,
    /// tunekit's own target names (PEFT ignores unknown keys).
    #[serde(default)]
    pub tunekit_targets: Vec<LoraTarget>,
    /// rsLoRA scaling alpha / √r (PEFT option).
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (PEFT option; not supported).
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module ranks (PEFT option; not supported when non-empty).
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// Per-module alphas (PEFT option; not supported when non-empty).
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

impl AdapterConfig {
    /// The config for adapters trained with `opts` on the base model in `base` (of the family
    /// `names`).
    pub fn new(opts: &LoraOptions, base: &Path, names: &Names) -> Self {
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        let mut targets: Vec<String> = opts
            .targets
            .iter()
            .flat_map(|t| t.peft_names(names))
            .collect();
        targets.sort();
        targets.dedup();
        AdapterConfig {
            peft_type: "LORA".into(),
            task_type: "SEQ_CLS".into(),
            base_model_name_or_path: base.display().to_string(),
            r: opts.rank,
            lora_alpha: opts.alpha,
            lora_dropout: opts.dropout,
            target_modules: targets,
            modules_to_save: modules_to_save(names),
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

    /// The alpha burn scales with (`alpha / r`) for an adapter tunekit can represent exactly:
    /// a LoRA adapter (no DoRA, rank or alpha patterns, no biases) of rank ≥ 1 and finite
    /// positive alpha; rsLoRA's `alpha / √r` becomes `alpha · √r`.
    ///
    /// # Errors
    /// Why the adapter cannot be represented (the caller names the file).
    pub fn burn_alpha(&self) -> std::result::Result<f64, String> {
        if self.peft_type != "LORA" {
            return Err(format!("peft_type {} is not LORA", self.peft_type));
        }
        if self.use_dora || !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return Err("DoRA, rank_pattern and alpha_pattern are not supported".into());
        }
        if self.bias != "none" {
            return Err(format!(
                "bias = {:?}: only \"none\" is supported",
                self.bias
            ));
        }
        if self.r == 0 || !(self.lora_alpha > 0.0 && self.lora_alpha.is_finite()) {
            return Err(format!(
                "LoRA needs a rank of at least 1 and a positive finite alpha, got r = {}, lora_alpha = {}",
                self.r, self.lora_alpha
            ));
        }
        Ok(if self.use_rslora {
            self.lora_alpha * (self.r as f64).sqrt()
        } else {
            self.lora_alpha
        })
    }

    /// The LoRA options to rebuild this adapter for inference (dropout plays no part there).
    /// Adapters written by PEFT are accepted when tunekit can represent them exactly.
    pub fn options(&self, names: &Names) -> std::result::Result<LoraOptions, String> {
        let alpha = self.burn_alpha()?;
        let targets = if self.tunekit_targets.is_empty() {
            self.target_modules
                .iter()
                .map(|m| {
                    LoraTarget::from_peft_name(m, names).ok_or_else(|| {
                        let known: Vec<String> = LoraTarget::ALL
                            .into_iter()
                            .flat_map(|t| t.peft_names(names))
                            .collect();
                        format!(
                            "target module {m:?} is not a {} projection tunekit adapts ({})",
                            names.model_type,
                            known.join(", ")
                        )
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            self.tunekit_targets.clone()
        };
        Ok(LoraOptions {
            rank: self.r,
            alpha,
            dropout: 0.0,
            targets,
        })
    }
}
