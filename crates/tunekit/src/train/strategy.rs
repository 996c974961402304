//! Training strategies decided before the loop runs: which weights load and which train
//! (frozen embeddings/layers/encoder, LoRA adapters), the optimiser with its no-decay group,
//! layer-wise learning-rate decay, and gradual unfreezing as a component the loop asks each
//! step ([`Unfreezing`]). Each is a function of the config alone, the same for every task.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{
    AdamConfig, ModuleOptimizer, RmsPropConfig, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::tensor::{Device, Tensor};

use crate::config::{OptimizerKind, RunConfig};
use crate::error::{Error, Result};
use crate::model::weights::{
    ClassifierSpec, DropoutOverride, LoadReport, load_classifier, param_id,
};
use crate::model::{ModelDir, SequenceClassifier};
use crate::optim::FusedAdamW;
use crate::schedule::Schedule;

/// The head an encoder run builds for `outputs` outputs (an embedding model has none: a
/// one-output head is built and never used).
pub(crate) fn encoder_spec(config: &RunConfig, outputs: usize) -> ClassifierSpec {
    ClassifierSpec {
        num_labels: outputs.max(1),
        pooling: config.model.pooling,
        dropout: DropoutOverride {
            hidden: config.model.hidden_dropout,
            attention: config.model.attention_dropout,
        },
        seed: config.train.seed,
        require_head: false,
        head: config.task.kind.head(),
    }
}

/// [`trainable_model`] for an encoder objective's [`super::fit::Objective::build`]: the
/// model with `outputs` head outputs, the load report logged on a fresh start.
pub(crate) fn build_encoder(
    config: &RunConfig,
    model_dir: &ModelDir,
    outputs: usize,
    has_head: bool,
    resume_from: Option<&Path>,
    ad: &Device,
) -> Result<super::fit::Built<SequenceClassifier>> {
    let spec = encoder_spec(config, outputs);
    let (model, report, frozen) = trainable_model(config, model_dir, &spec, resume_from, ad)?;
    if resume_from.is_none() {
        log_load_report(&report, has_head, outputs);
    }
    Ok(super::fit::Built { model, frozen })
}

/// The exported encoder loaded for inference: full weights from `run.best_dir`, or for LoRA
/// the base model with the adapters of `export_dir` (which must already hold them).
pub(crate) fn best_encoder<S>(
    run: &super::fit::Finished<'_, S>,
    model_config: &crate::model::BertConfig,
    outputs: usize,
    has_head: bool,
    export_dir: &Path,
) -> Result<SequenceClassifier> {
    let spec = ClassifierSpec {
        require_head: has_head,
        ..encoder_spec(run.config, outputs)
    };
    if run.lora() {
        return Ok(crate::model::lora::load_for_inference(export_dir, &spec, run.device)?.0);
    }
    Ok(load_classifier(
        &run.best_dir.join("model.safetensors"),
        model_config,
        &spec,
        run.device,
    )?
    .0)
}

/// The model a run trains: weights from the pretrained model (or the checkpoint being
/// resumed), LoRA adapters when configured, the strategy's frozen tensors frozen. Returns it
/// with its load report and the frozen parameter count.
pub(crate) fn trainable_model(
    config: &RunConfig,
    model_dir: &ModelDir,
    spec: &ClassifierSpec,
    resume_from: Option<&Path>,
    ad: &Device,
) -> Result<(SequenceClassifier, LoadReport, usize)> {
    let lora = config.strategy.lora.as_ref();
    // A LoRA run resumes from the base weights plus its saved adapters and head.
    let weights = match (resume_from, lora) {
        (Some(dir), None) => dir.join("model.safetensors"),
        _ => model_dir.weights_path(),
    };
    let (mut model, report) = load_classifier(&weights, &model_dir.config, spec, ad)?;
    model
        .encoder
        .set_precision(crate::model::bf16::for_device(config.train.precision, ad)?);
    if let Some(opts) = lora {
        // A's initial values come from the device RNG: seeded, so runs repeat.
        ad.seed(spec.seed);
        model = crate::model::lora::apply(model, opts, &model_dir.config);
        if let Some(dir) = resume_from {
            model = crate::model::lora::load_adapter(
                model,
                &dir.join(crate::model::lora::ADAPTER_WEIGHTS),
                ad,
            )?;
        }
    }
    let (frozen_ids, frozen_size) = frozen_params(config, &model_dir.config, None)?;
    if !frozen_ids.is_empty() {
        // burn's freezing: frozen tensors are detached, get no gradient, and so are never
        // touched by the optimiser (nor by weight decay).
        model = model.freeze_group(ParamGroup::from_ids(frozen_ids));
    }
    Ok((model, report, frozen_size))
}

/// Gradual unfreezing (ULMFiT): the encoder opens one layer per epoch (or per
/// `unfreeze_every_steps` steps) from the top. The loop asks it before every step; the stage
/// is a function of the position alone, so a resumed run freezes exactly the same tensors.
pub(crate) struct Unfreezing {
    config: RunConfig,
    model_config: crate::model::BertConfig,
    all_params: usize,
    current: Option<usize>,
}

impl Unfreezing {
    /// For `config`'s strategy on a model of `model_config` with `all_params` parameters.
    pub(crate) fn new(
        config: &RunConfig,
        model_config: &crate::model::BertConfig,
        all_params: usize,
    ) -> Self {
        Unfreezing {
            config: config.clone(),
            model_config: model_config.clone(),
            all_params,
            current: None,
        }
    }

    /// The model with the stage of `position` (step, epoch) applied, and the new trainable
    /// parameter count when the stage changed.
    pub(crate) fn stage_at<M: Module>(
        &mut self,
        model: M,
        position: (usize, usize),
    ) -> Result<(M, Option<usize>)> {
        let (step, epoch) = position;
        let every = self.config.strategy.unfreeze_every_steps;
        let stage = step.checked_div(every).unwrap_or(epoch);
        if self.current == Some(stage) {
            return Ok((model, None));
        }
        let (frozen, size) = frozen_params(&self.config, &self.model_config, Some(stage))?;
        let encoder: Vec<ParamId> = crate::model::weights::encoder_shapes(&self.model_config)
            .into_iter()
            .map(|(n, _)| param_id(&n))
            .collect();
        self.current = Some(stage);
        let trainable = self.all_params - size;
        tracing::info!(
            "gradual unfreezing, stage {}: {trainable} trainable parameters",
            stage + 1
        );
        Ok((
            model
                .unfreeze_group(ParamGroup::from_ids(encoder))
                .freeze_group(ParamGroup::from_ids(frozen)),
            Some(trainable),
        ))
    }
}

/// Collects parameter ids and names: biases and LayerNorm parameters get no weight decay
/// (as HF Trainer does).
struct NoDecayIds {
    ids: Vec<ParamId>,
    all: usize,
}

impl ModuleVisitor for NoDecayIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.all += param.shape().num_elements();
        if D == 1 {
            self.ids.push(param.id);
        }
    }
}

/// Build the configured optimiser from burn's, with a no-decay group for 1-D parameters
/// (biases and LayerNorm weights).
pub fn build_optimizer<M: Module>(config: &RunConfig, model: &M) -> (ModuleOptimizer, usize) {
    let t = &config.train;
    let mut visitor = NoDecayIds {
        ids: Vec::new(),
        all: 0,
    };
    model.visit(&mut visitor);
    let no_decay = ParamGroup::from_ids(visitor.ids);
    let (eps, b1, b2) = (t.epsilon as f32, t.beta1 as f32, t.beta2 as f32);
    let wd = t.weight_decay as f32;
    let optim =
        match t.optimizer {
            // burn's AdamW arithmetic in one fused pass per parameter (`crate::optim`).
            OptimizerKind::Adamw => ModuleOptimizer::from(FusedAdamW::new(b1, b2, eps, wd))
                .with_group(no_decay, FusedAdamW::new(b1, b2, eps, 0.0), None),
            OptimizerKind::Adam => {
                let make = |wd: f32| {
                    AdamConfig::new()
                        .with_beta_1(b1)
                        .with_beta_2(b2)
                        .with_epsilon(eps)
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
            OptimizerKind::Sgd => {
                let momentum = (t.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(t.momentum)
                        .with_dampening(0.0)
                        .with_nesterov(t.nesterov)
                });
                let make = |wd: f32| {
                    SgdConfig::new()
                        .with_momentum(momentum.clone())
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
            OptimizerKind::Rmsprop => {
                let make = |wd: f32| {
                    RmsPropConfig::new()
                        .with_alpha(t.rmsprop_alpha as f32)
                        .with_momentum(t.momentum as f32)
                        .with_epsilon(eps)
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
        };
    (optim, visitor.all)
}

/// Elements of the parameters that require a gradient.
pub(crate) fn trainable_params<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}

/// Sorted parameter ids of the model. Saved with every checkpoint and compared on resume:
/// burn keys optimiser state by `ParamId`, so a model rebuilt with different ids would
/// silently restart its moments and the resumed run would diverge.
pub(crate) fn model_param_ids<M: Module>(model: &M) -> Vec<u64> {
    struct Ids(Vec<u64>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id.val());
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    ids.0.sort_unstable();
    ids.0
}

/// Depth of an encoder tensor (HF name without the family prefix) from the top of the
/// network in `config`'s family: the head and pooler are 0, the top layer 1, …, the
/// embeddings `layers + 1` ([`crate::model::family::Names::depth_of`]).
pub(crate) fn depth_of(config: &crate::model::BertConfig, name: &str) -> usize {
    config
        .family()
        .names()
        .depth_of(name, config.num_hidden_layers)
}

/// Parameter ids and sizes of the encoder tensors the strategy freezes.
/// With gradual unfreezing, pass the 0-based unfreezing `stage` (epoch, or step / N): tensors
/// deeper than it stay frozen.
fn frozen_params(
    config: &RunConfig,
    model_config: &crate::model::BertConfig,
    stage: Option<usize>,
) -> Result<(Vec<ParamId>, usize)> {
    let st = &config.strategy;
    let layers = model_config.num_hidden_layers;
    if st.freeze_layers > layers {
        return Err(Error::Config(format!(
            "strategy.freeze_layers = {} but the model has {layers} layers",
            st.freeze_layers
        )));
    }
    let mut ids = Vec::new();
    let mut size = 0;
    let names = model_config.family().names();
    let is_pooler = |name: &str| names.pooler.is_some_and(|p| name.starts_with(p));
    for (name, shape) in crate::model::weights::encoder_shapes(model_config) {
        let depth = depth_of(model_config, &name);
        let frozen = if is_pooler(&name) {
            false
        } else if st.freeze_encoder {
            true
        } else if names.is_embedding(&name) {
            st.freeze_embeddings
        } else {
            // Layer i has depth layers - i; the first N layers are i < N.
            layers - depth < st.freeze_layers
        };
        let not_yet = st.gradual_unfreeze && stage.is_some_and(|e| depth > e) && !is_pooler(&name);
        if frozen || not_yet {
            ids.push(param_id(&name));
            size += shape.iter().product::<usize>();
        }
    }
    Ok((ids, size))
}

/// A [`Schedule`] scaled by a constant factor, as a burn `LrScheduler`, so that burn's
/// `ModuleLrScheduler` can give each layer group its own rate (layer-wise LR decay). Its state
/// is the step, which [`TrainState`] already holds, so its record is empty.
#[derive(Clone)]
struct ScaledSchedule {
    schedule: Schedule,
    factor: f64,
    step: usize,
}

impl burn::lr_scheduler::LrScheduler for ScaledSchedule {
    fn step(&mut self) -> f64 {
        let lr = self.schedule.lr(self.step) * self.factor;
        self.step += 1;
        lr
    }

    fn to_record(&self) -> burn::lr_scheduler::LrSchedulerRecord {
        burn::lr_scheduler::LrSchedulerRecord::new()
    }

    fn load_record(&mut self, _record: burn::lr_scheduler::LrSchedulerRecord) {}
}

/// Per-parameter learning rates from `step` on: the schedule for everything, scaled by
/// decay^depth per encoder layer group when `layer_lr_decay` < 1 (for an encoder:
/// `model_config`; the config refuses the decay for other networks).
pub(crate) fn layer_schedules(
    config: &RunConfig,
    model_config: Option<&crate::model::BertConfig>,
    schedule: Schedule,
    step: usize,
) -> burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler {
    use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    let base = ScaledSchedule {
        schedule,
        factor: 1.0,
        step,
    };
    let mut sched = ModuleLrScheduler::new(base);
    let decay = config.strategy.layer_lr_decay;
    if let Some(model_config) = model_config.filter(|_| decay < 1.0) {
        let layers = model_config.num_hidden_layers;
        let mut by_depth: Vec<Vec<ParamId>> = vec![Vec::new(); layers + 2];
        for (name, _) in crate::model::weights::encoder_shapes(model_config) {
            by_depth[depth_of(model_config, &name)].push(param_id(&name));
        }
        for (depth, ids) in by_depth.into_iter().enumerate().skip(1) {
            if ids.is_empty() {
                continue;
            }
            let scaled = ScaledSchedule {
                schedule,
                factor: decay.powi(depth as i32),
                step,
            };
            sched = sched.with_group(ParamGroup::from_ids(ids), scaled);
        }
    }
    sched
}

/// What loading the pretrained weights did that a user should know: a fresh head or pooler,
/// tensors of the file left unused.
fn log_load_report(report: &crate::model::weights::LoadReport, has_head: bool, outputs: usize) {
    if report.classifier_initialized && has_head {
        tracing::info!("classifier head initialised for {outputs} outputs");
    }
    if report.pooler_initialized {
        tracing::info!("pooler initialised (the pretrained weights have none)");
    }
    if !report.unused_tensors.is_empty() {
        tracing::info!(
            "{} tensors in the pretrained weights are not used: {:?}",
            report.unused_tensors.len(),
            report.unused_tensors
        );
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn depth_counts_from_the_top() {
        let bert = crate::model::Family::Bert.names();
        assert_eq!(bert.depth_of("classifier.weight", 6), 0);
        assert_eq!(bert.depth_of("pooler.dense.weight", 6), 0);
        assert_eq!(bert.depth_of("encoder.layer.5.output.dense.weight", 6), 1);
        assert_eq!(bert.depth_of("encoder.layer.0.output.dense.weight", 6), 6);
        assert_eq!(bert.depth_of("embeddings.word_embeddings.weight", 6), 7);
        let distil = crate::model::Family::DistilBert.names();
        assert_eq!(distil.depth_of("transformer.layer.0.ffn.lin1.weight", 6), 6);
        assert_eq!(distil.depth_of("pre_classifier.weight", 6), 0);
        let mpnet = crate::model::Family::MPNet.names();
        assert_eq!(
            mpnet.depth_of("encoder.relative_attention_bias.weight", 6),
            7
        );
        let electra = crate::model::Family::Electra.names();
        assert_eq!(electra.depth_of("embeddings_project.weight", 6), 7);
    }
}
