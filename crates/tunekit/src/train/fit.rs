//! The one training loop, for every task: setup → epochs of accumulation groups → gradient
//! step → optimiser step → evaluation, best checkpoint and resumable checkpoint → the task's
//! finish (export, final evaluation, run files).
//!
//! What differs between tasks is behind [`Objective`] (targets, loss, validation scores,
//! what is written at the end); what differs between devices is behind [`GradientStep`];
//! what differs between strategies is decided before the loop ([`super::strategy`]: frozen
//! tensors, LoRA, layer-wise rates) or by a component the loop asks each step
//! ([`super::strategy::Unfreezing`]). The loop itself has no task, device or strategy branch:
//! the [`GradientStep`] (one device, several, DP-SGD) is chosen once before it (`Stepper`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::TrainModel;
use super::state::{
    EvalRecord, TrainState, restore, resume_point, rewrite_history, save_checkpoint, save_weights,
};
use super::step::{optimizer_step, step_seed};
use super::strategy::{
    Unfreezing, build_optimizer, layer_schedules, model_param_ids, trainable_params,
};
use super::{TrainOptions, progress_bar};
use crate::batch::{epoch_batches, epoch_seed};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::model::BertConfig;

use crate::schedule::{Schedule, warmup_steps};
use crate::tensorboard::EventWriter;

/// What a task contributes to the training loop. Implemented by classification
/// ([`crate::task::classification`]) and by the other tasks ([`crate::task::run`]); a new task
/// implements it once and gets every strategy, resume, early stopping, search pruning and
/// TensorBoard for free.
pub(crate) trait Objective {
    /// One validation's scores (`validation` of a `metrics.jsonl` line).
    type Scores: Serialize + DeserializeOwned + Clone;
    /// The network it trains (an encoder with its head, a decoder language model).
    type Model: TrainModel;

    /// The model to train, on the autodiff device `ad`: the pretrained weights, or the
    /// checkpoint in `resume_from`; LoRA adapters attached and the strategy's frozen tensors
    /// frozen. Called once, before [`Objective::setup`].
    fn build(
        &mut self,
        config: &RunConfig,
        resume_from: Option<&Path>,
        ad: &Device,
    ) -> Result<Built<Self::Model>>;
    /// The encoder's config, for the strategies that count layers (layer-wise learning-rate
    /// decay, gradual unfreezing); `None` for a network they do not apply to (the config
    /// refuses them there).
    fn layered_config(&self) -> Option<&BertConfig>;
    /// Token count of every training example, in order (length-grouped batching).
    fn train_lengths(&self) -> Vec<usize>;
    /// Indices of the training examples that make up `epoch` (with repeats when
    /// oversampling); all of them, once, by default.
    fn epoch_sample(&self, epoch: usize) -> Vec<usize> {
        let _ = epoch;
        (0..self.train_lengths().len()).collect()
    }
    /// One line saying what is trained (logged once, with the step counts appended).
    fn describe(&self) -> String;
    /// Once before the first step, with the model as built or resumed: teacher logits,
    /// cached features. `device` is the inference device, `ad` its autodiff version.
    fn setup(&mut self, model: &Self::Model, device: &Device, ad: &Device) -> Result<()> {
        let _ = (model, device, ad);
        Ok(())
    }
    /// At the start of every epoch (augmentation redraws its inputs here).
    fn begin_epoch(&mut self, epoch: usize, progress: &indicatif::ProgressBar) -> Result<()> {
        let _ = (epoch, progress);
        Ok(())
    }
    /// What the summed losses of one accumulation group are divided by (examples, class
    /// weights or labelled pieces), so accumulated micro-batches equal one large batch.
    fn normaliser(&self, group: &[Vec<usize>]) -> f64;
    /// Whether an example's loss depends on the other examples of its micro-batch (in-batch
    /// negatives): such a batch cannot be split over devices (`train.devices`).
    fn couples_batch(&self) -> bool {
        false
    }
    /// The summed loss of training examples `idx`: a `[1]` tensor on the autodiff device.
    fn loss_sum(&self, model: &Self::Model, idx: &[usize], ad: &Device) -> Result<Tensor<1>>;
    /// Scores of `model` (inference mode) on the validation split; `None` without one.
    fn validate(
        &self,
        model: &Self::Model,
        device: &Device,
    ) -> Result<Option<Validation<Self::Scores>>>;
    /// After the last step: export the best model, evaluate it, write the run's files.
    fn finish(self, run: Finished<'_, Self::Scores>) -> Result<super::RunMetrics>;
}

/// One validation, as the loop needs it.
pub(crate) struct Validation<S> {
    /// The scores (kept in the history).
    pub scores: S,
    /// The selection metric's value (`train.metric`).
    pub value: f64,
    /// TensorBoard scalars, e.g. `("validation/accuracy", 0.9)`.
    pub scalars: Vec<(String, f64)>,
    /// Appended to the log line, e.g. ` (accuracy 0.9, macro-F1 0.9)`.
    pub note: String,
}

/// The model [`Objective::build`] made, and what the loop logs about it.
pub(crate) struct Built<M> {
    /// The model, on the autodiff device.
    pub model: M,
    /// Elements of the parameters the strategy froze (not counting LoRA's frozen base).
    pub frozen: usize,
}

/// What the loop hands to [`Objective::finish`].
pub(crate) struct Finished<'a, S> {
    /// The run's config.
    pub config: &'a RunConfig,
    /// The run directory.
    pub run_dir: &'a Path,
    /// Inference device.
    pub device: &'a Device,
    /// `run_dir/best`: the best weights (or LoRA adapters and head).
    pub best_dir: PathBuf,
    /// The final training state (history, best step, steps done).
    pub state: TrainState<EvalRecord<S>>,
    /// Training wall time in seconds, across resumes.
    pub train_time_s: f64,
    /// Trainable parameters at the end (the last unfreezing stage's).
    pub trainable: usize,
    /// The run's TensorBoard writer (test scalars go to the best step).
    pub tensorboard: EventWriter,
    /// What a differentially private run spent (`privacy` of `metrics.json`).
    pub privacy: Option<crate::dp::PrivacyReport>,
}

impl<S> Finished<'_, S> {
    /// Whether the run trains LoRA adapters.
    pub fn lora(&self) -> bool {
        self.config.strategy.lora.is_some()
    }

    /// The step whose weights were exported (the best one, else the last).
    pub fn exported_step(&self) -> usize {
        self.state.best_step.unwrap_or(self.state.step)
    }
}

/// How the gradients of one accumulation group are computed. This is the seam where
/// several devices plug in (as burn-train's learner strategies do): a data-parallel step
/// splits the group over devices and sums their gradients, and nothing else in the loop
/// changes. [`DataParallel`] runs a group on one device or several.
pub(crate) trait GradientStep {
    /// Gradients of the mean loss over `group` (micro-batches of training example indices)
    /// and that mean loss. Dropout is reseeded before every micro-batch from
    /// `(seed, step, micro-batch)`, so a resumed run retraces an uninterrupted one.
    fn gradients<O: Objective>(
        &self,
        objective: &O,
        model: &O::Model,
        group: &[Vec<usize>],
        step: usize,
    ) -> Result<(GradientsAccumulator<O::Model>, f64)>;
}

/// Every micro-batch split over several devices, gradients gathered onto the first: burn-train's
/// `multi` strategy ("optimiser on the main device": a replica forked per device,
/// `GradientsParams::to_device`, one `GradientsAccumulator`), run inside this loop so that
/// schedules, accumulation, checkpoints and resume stay the loop's. A micro-batch of
/// `batch_size` examples becomes one contiguous shard per device; the shards' summed losses
/// share the group's normaliser, so the update equals one device's on the same global batch
/// (up to the order of float sums). Dropout draws from `(seed, step, micro-batch, shard)`;
/// shard 0 keeps the micro-batch's seed, so one device (the usual run: a single shard per
/// micro-batch, no fork, no move) reseeds from `(seed, step, micro-batch)` exactly.
///
/// The shards are issued one after another from this thread: GPU work is queued
/// asynchronously, so the devices still overlap, and the dropout seed stays exact — burn's
/// CubeCL backends keep one process-wide random seed (`cubek::random`), which shards seeding
/// from parallel threads would race on.
pub(crate) struct DataParallel {
    /// The autodiff devices; the first holds the model and the optimiser.
    pub devices: Vec<Device>,
    /// The run seed.
    pub seed: u64,
}

impl GradientStep for DataParallel {
    fn gradients<O: Objective>(
        &self,
        objective: &O,
        model: &O::Model,
        group: &[Vec<usize>],
        step: usize,
    ) -> Result<(GradientsAccumulator<O::Model>, f64)> {
        let Some(main) = self.devices.first() else {
            return Err(Error::Config(
                "train.devices: the device list is empty".into(),
            ));
        };
        let normaliser = objective.normaliser(group);
        let mut accumulator = GradientsAccumulator::new();
        let mut losses = Vec::new();
        for (micro, idx) in group.iter().enumerate() {
            let micro_seed = step_seed(self.seed, step, micro);
            let ranges = shard_ranges(idx.len(), self.devices.len());
            for (k, (device, range)) in self.devices.iter().zip(ranges).enumerate() {
                if range.is_empty() {
                    continue;
                }
                device.seed(shard_seed(micro_seed, k));
                let replica = if k == 0 {
                    model.clone()
                } else {
                    model.clone().fork(device)
                };
                let loss = objective
                    .loss_sum(&replica, &idx[range], device)?
                    .div_scalar(normaliser);
                // Read back after every shard is queued (a read waits for its device).
                losses.push(loss.clone().detach());
                let grads = GradientsParams::from_grads(loss.backward(), &replica);
                let grads = if k == 0 {
                    grads
                } else {
                    grads.to_device(main, &replica)
                };
                accumulator.accumulate(model, grads);
            }
        }
        let mut group_loss = 0.0f64;
        for loss in losses {
            let value = crate::model::weights::to_vec(loss)?;
            group_loss += f64::from(value.first().copied().unwrap_or(f32::NAN));
        }
        Ok((accumulator, group_loss))
    }
}

/// `len` items in `parts` contiguous ranges whose sizes differ by at most one (the first
/// ranges take the remainder); empty ranges when `len < parts`.
pub(crate) fn shard_ranges(len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    let (base, extra) = (len / parts, len % parts);
    let mut start = 0;
    (0..parts)
        .map(|k| {
            let size = base + usize::from(k < extra);
            let r = start..start + size;
            start += size;
            r
        })
        .collect()
}

/// The dropout seed of shard `k` of a micro-batch (shard 0 keeps the micro-batch's seed).
fn shard_seed(micro_seed: u64, k: usize) -> u64 {
    if k == 0 {
        micro_seed
    } else {
        step_seed(micro_seed, k, usize::MAX)
    }
}

/// How this run computes its gradients: on its device(s), or DP-SGD's per-example path.
enum Stepper {
    Devices(DataParallel),
    Private(crate::dp::clip::DpStep),
}

/// The devices of `train.devices`, or `None` (empty) for the one device of `--device`.
fn parallel_devices(config: &RunConfig) -> Result<Option<Vec<Device>>> {
    if config.train.devices.is_empty() {
        return Ok(None);
    }
    let kinds = config
        .train
        .devices
        .iter()
        .map(|d| d.parse::<crate::device::DeviceKind>())
        .collect::<Result<Vec<_>>>()?;
    // `RunConfig::validate` checked the list (one backend, no repeats, features built).
    let devices = kinds
        .iter()
        .map(|&k| crate::device::device(k))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(devices))
}

/// The optimiser side of a run: built once, restored on resume.
struct Optimisation {
    optim: ModuleOptimizer,
    lr_groups: burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    schedule: Schedule,
    total_steps: usize,
    steps_per_epoch: usize,
}

/// Train `objective` in `run_dir` and hand the result to its [`Objective::finish`].
/// Status, index and panics are the caller's ([`super::train`]).
pub(crate) fn fit<O: Objective>(
    config: &RunConfig,
    options: &TrainOptions,
    run_dir: &Path,
    device: &Device,
    mut objective: O,
) -> Result<super::RunMetrics> {
    let t = &config.train;
    // `train.devices`: the first is `device` (`super::main_device`): it holds the model,
    // evaluates and checkpoints.
    let parallel = parallel_devices(config)?;
    let ad = device.clone().autodiff();
    let Start {
        mut model,
        mut opt,
        mut state,
        mut trainable,
        all_params,
        mut tensorboard,
        dp,
    } = start(config, options, run_dir, device, &ad, &mut objective)?;
    let lora = config.strategy.lora.is_some();
    let metrics_path = run_dir.join("metrics.jsonl");
    let lengths = objective.train_lengths();
    let stepper = match (dp.clone(), parallel) {
        // DP-SGD: Poisson-sampled logical batches, per-example clipping and noise.
        (Some(plan), _) => Stepper::Private(crate::dp::clip::DpStep {
            ad: ad.clone(),
            seed: t.seed,
            plan,
        }),
        (None, Some(devices)) if devices.len() > 1 => {
            if objective.couples_batch() {
                return Err(Error::Config(
                    "train.devices: this task's loss compares the examples of a batch with \
                     each other (in-batch negatives), so a batch cannot be split over devices"
                        .into(),
                ));
            }
            tracing::info!(
                "data-parallel over {} devices ({}): each batch of {} split into shards, \
                 gradients gathered on the first",
                devices.len(),
                t.devices.join(", "),
                t.batch_size
            );
            Stepper::Devices(DataParallel {
                devices: devices.into_iter().map(|d| d.autodiff()).collect(),
                seed: t.seed,
            })
        }
        (None, _) => Stepper::Devices(DataParallel {
            devices: vec![ad.clone()],
            seed: t.seed,
        }),
    };
    let mut unfreezing = match (config.strategy.gradual_unfreeze, objective.layered_config()) {
        (false, _) => None,
        (true, Some(layered)) => Some(Unfreezing::new(config, layered, all_params)),
        (true, None) => {
            return Err(Error::Config(
                "strategy.gradual_unfreeze: this model has no encoder layers to unfreeze".into(),
            ));
        }
    };
    let progress = progress_bar(options.progress, opt.total_steps as u64, state.step as u64);
    let best_dir = run_dir.join("best");
    let clock = Clock::start(&state);
    'epochs: while state.epoch < t.epochs && state.step < opt.total_steps && !state.stopped_early {
        let sample = objective.epoch_sample(state.epoch);
        let sample_lengths: Vec<usize> = sample.iter().map(|&i| lengths[i]).collect();
        let batches: Vec<Vec<usize>> = match &dp {
            Some(plan) => plan.epoch_batches(
                t.seed,
                state.epoch,
                opt.steps_per_epoch,
                t.gradient_accumulation,
            ),
            None => epoch_batches(
                &sample_lengths,
                t.batch_size,
                t.length_bucketing,
                epoch_seed(t.seed, state.epoch),
            )
            .into_iter()
            .map(|b| b.into_iter().map(|j| sample[j]).collect())
            .collect(),
        };
        objective.begin_epoch(state.epoch, &progress)?;
        while state.batch_in_epoch < batches.len() {
            if state.step >= opt.total_steps {
                break 'epochs;
            }
            if let Some(u) = unfreezing.as_mut() {
                let (m, now) = progress.suspend(|| u.stage_at(model, (state.step, state.epoch)))?;
                model = m;
                trainable = now.unwrap_or(trainable);
            }
            let group_end = (state.batch_in_epoch + t.gradient_accumulation).min(batches.len());
            let group = &batches[state.batch_in_epoch..group_end];
            let group_size: usize = group.iter().map(Vec::len).sum();
            let (accumulator, group_loss) = match &stepper {
                Stepper::Private(s) => s.gradients(&objective, &model, group, state.step)?,
                Stepper::Devices(s) => s.gradients(&objective, &model, group, state.step)?,
            };
            let lr;
            (model, lr) = optimizer_step(
                config,
                model,
                &mut opt.optim,
                &mut opt.lr_groups,
                &opt.schedule,
                accumulator,
                group_loss,
                (state.step, state.epoch),
            )?;
            state.step += 1;
            if let Some(plan) = &dp {
                let history = &mut state.privacy.get_or_insert_with(Default::default).history;
                crate::dp::push_steps(history, plan.noise_multiplier, plan.sample_rate, 1);
            }
            state.batch_in_epoch = group_end;
            state.examples_seen += group_size;
            state.loss_since_eval.0 += group_loss * group_size as f64;
            state.loss_since_eval.1 += group_size;
            tensorboard.scalars(
                state.step,
                &[("train/loss", group_loss), ("train/learning_rate", lr)],
            )?;
            progress.set_position(state.step as u64);
            progress.set_message(format!(
                "epoch {}/{} loss {group_loss:.4} lr {lr:.2e} {:.1} ex/s",
                state.epoch + 1,
                t.epochs,
                clock.rate(&state)
            ));

            let end_of_epoch = state.batch_in_epoch >= batches.len();
            let eval_now = end_of_epoch
                || state.step >= opt.total_steps
                || (t.eval_every_steps > 0 && state.step.is_multiple_of(t.eval_every_steps));
            if eval_now {
                state.elapsed_s = clock.elapsed();
                let ctx = EvalContext {
                    config,
                    options,
                    device,
                    best_dir: &best_dir,
                    metrics_path: &metrics_path,
                    steps_per_epoch: opt.steps_per_epoch,
                    lr,
                    dp: dp.as_ref(),
                };
                evaluate(
                    &ctx,
                    &objective,
                    &model,
                    &mut state,
                    &mut tensorboard,
                    &progress,
                )?;
            }
            if end_of_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            if eval_now
                || (t.checkpoint_every_steps > 0
                    && state.step.is_multiple_of(t.checkpoint_every_steps))
            {
                state.elapsed_s = clock.elapsed();
                save_checkpoint(run_dir, &model, &opt.optim, &state, lora)?;
            }
            if state.stopped_early {
                break 'epochs;
            }
            if end_of_epoch {
                break;
            }
        }
    }
    progress.finish_and_clear();
    // The objective's finish reloads the exported weights: free the trained copy and the
    // optimiser's moments first (a full fine-tune would otherwise hold both twice).
    drop(model);
    drop(opt);
    let train_time_s = clock.elapsed();
    let privacy = dp
        .as_ref()
        .map(|plan| privacy_report(plan, &state))
        .transpose()?;
    if let Some(p) = &privacy {
        tracing::info!(
            "differential privacy: ε = {:.3} at δ = {:e} ({} accountant, {} noisy steps)",
            p.epsilon,
            p.delta,
            p.accountant.name(),
            p.steps
        );
    }
    objective.finish(Finished {
        config,
        run_dir,
        device,
        best_dir,
        state,
        train_time_s,
        trainable,
        tensorboard,
        privacy,
    })
}

/// ε spent so far by `state`'s accountant history.
fn spent_epsilon<R>(plan: &crate::dp::DpPlan, state: &TrainState<R>) -> Result<f64> {
    let history = state
        .privacy
        .as_ref()
        .map(|p| p.history.as_slice())
        .unwrap_or_default();
    plan.accountant.epsilon(history, plan.delta)
}

/// The final (ε, δ) of a DP run and how they were reached.
fn privacy_report<R>(
    plan: &crate::dp::DpPlan,
    state: &TrainState<R>,
) -> Result<crate::dp::PrivacyReport> {
    let steps = state
        .privacy
        .as_ref()
        .map_or(0, |p| p.history.iter().map(|c| c.steps).sum());
    Ok(crate::dp::PrivacyReport {
        epsilon: spent_epsilon(plan, state)?,
        delta: plan.delta,
        accountant: plan.accountant,
        noise_multiplier: plan.noise_multiplier,
        max_grad_norm: plan.max_grad_norm,
        sample_rate: plan.sample_rate,
        steps,
        target_epsilon: plan.target_epsilon,
    })
}

/// What a run starts from, fresh or resumed.
struct Start<M, S> {
    model: M,
    opt: Optimisation,
    state: TrainState<EvalRecord<S>>,
    trainable: usize,
    all_params: usize,
    tensorboard: EventWriter,
    dp: Option<crate::dp::DpPlan>,
}

/// Build the model to train (pretrained weights or the checkpoint being resumed, LoRA,
/// frozen tensors), its optimiser and schedule, the state and history, and let the
/// objective set itself up.
fn start<O: Objective>(
    config: &RunConfig,
    options: &TrainOptions,
    run_dir: &Path,
    device: &Device,
    ad: &Device,
    objective: &mut O,
) -> Result<Start<O::Model, O::Scores>> {
    let t = &config.train;
    // Resume: weights and state from the latest checkpoint; otherwise the pretrained model.
    let resume_from = resume_point(run_dir, options.resume)?;
    let lora = config.strategy.lora.is_some();
    let Built {
        model,
        frozen: frozen_size,
    } = objective.build(config, resume_from.as_deref(), ad)?;
    let (optim, all_params) = build_optimizer(config, &model);
    // With gradual unfreezing this is updated per stage and ends as the last stage's count.
    let trainable = if lora {
        trainable_params(&model)
    } else {
        all_params - frozen_size
    };
    if let Some(opts) = &config.strategy.lora {
        tracing::info!(
            "LoRA rank {} alpha {} on {:?}: {trainable} trainable parameters (the adapters, and an encoder's head) of {all_params}",
            opts.rank,
            opts.alpha,
            opts.targets
        );
    }
    let mut state: TrainState<EvalRecord<O::Scores>> = TrainState::start(model_param_ids(&model));
    let mut optim = optim;
    if let Some(dir) = &resume_from {
        (optim, state) = restore(dir, optim, &model)?;
    }
    // metrics.jsonl always equals the checkpoint's history plus what follows.
    let metrics_path = run_dir.join("metrics.jsonl");
    rewrite_history(&metrics_path, &state.history)?;
    // TensorBoard curves (`tensorboard --logdir runs/`); a resumed run adds a file.
    let tensorboard = EventWriter::create(run_dir)?;
    objective.setup(&model, device, ad)?;
    let opt = optimisation(config, objective, optim, state.step);
    let dp = match &config.privacy.dp {
        Some(options) => {
            let history = state
                .privacy
                .as_ref()
                .map(|p| p.history.clone())
                .unwrap_or_default();
            let plan = crate::dp::DpPlan::new(
                options,
                objective.train_lengths().len(),
                t.batch_size * t.gradient_accumulation,
                opt.total_steps,
                &history,
            )?;
            tracing::info!("{}", plan.describe());
            Some(plan)
        }
        None => None,
    };
    tracing::info!(
        "{}, {} epochs × {} steps (batch {} × accumulation {}), {} warm-up steps, {trainable} trainable parameters",
        objective.describe(),
        t.epochs,
        opt.steps_per_epoch,
        t.batch_size,
        t.gradient_accumulation,
        opt.schedule.warmup,
    );

    Ok(Start {
        model,
        opt,
        state,
        trainable,
        all_params,
        tensorboard,
        dp,
    })
}

/// Step counts, schedule, optimiser and per-layer rates of a run from `step` on.
fn optimisation<O: Objective>(
    config: &RunConfig,
    objective: &O,
    optim: ModuleOptimizer,
    step: usize,
) -> Optimisation {
    let t = &config.train;
    let epoch_size = objective.epoch_sample(0).len();
    let batches_per_epoch = epoch_size.div_ceil(t.batch_size);
    let steps_per_epoch = if config.privacy.dp.is_some() {
        // Poisson sampling: 1/q logical batches make an epoch.
        crate::dp::steps_per_epoch(epoch_size, t.batch_size * t.gradient_accumulation)
    } else {
        batches_per_epoch.div_ceil(t.gradient_accumulation)
    };
    let mut total_steps = steps_per_epoch * t.epochs;
    if t.max_steps > 0 {
        total_steps = total_steps.min(t.max_steps);
    }
    let schedule = Schedule {
        kind: t.scheduler,
        base_lr: t.learning_rate,
        warmup: warmup_steps(total_steps, t.warmup_ratio, t.warmup_steps),
        total: total_steps,
    };
    let lr_groups = layer_schedules(config, objective.layered_config(), schedule, step);
    Optimisation {
        optim,
        lr_groups,
        schedule,
        total_steps,
        steps_per_epoch,
    }
}

/// Training time and throughput across resumes.
struct Clock {
    started: Instant,
    elapsed_before: f64,
    examples_before: usize,
}

impl Clock {
    fn start<R>(state: &TrainState<R>) -> Self {
        Clock {
            started: Instant::now(),
            elapsed_before: state.elapsed_s,
            examples_before: state.examples_seen,
        }
    }

    /// Seconds of training, this process and the ones it resumed.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Training examples per second in this process.
    fn rate<R>(&self, state: &TrainState<R>) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        (state.examples_seen - self.examples_before) as f64 / secs.max(1e-9)
    }
}

/// What an evaluation during training needs besides the model and state.
struct EvalContext<'a> {
    config: &'a RunConfig,
    options: &'a TrainOptions,
    device: &'a Device,
    best_dir: &'a Path,
    metrics_path: &'a Path,
    steps_per_epoch: usize,
    lr: f64,
    dp: Option<&'a crate::dp::DpPlan>,
}

/// Validate, log, record the history, keep the best weights, decide early stopping and ask
/// the search's pruning hook. Without validation data the last model is the one exported.
fn evaluate<O: Objective>(
    ctx: &EvalContext<'_>,
    objective: &O,
    model: &O::Model,
    state: &mut TrainState<EvalRecord<O::Scores>>,
    tensorboard: &mut EventWriter,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let t = &ctx.config.train;
    let lora = ctx.config.strategy.lora.is_some();
    let Some(v) = objective.validate(&model.valid(), ctx.device)? else {
        state.best_step = Some(state.step);
        return save_weights(model, ctx.best_dir, lora);
    };
    let record = EvalRecord {
        step: state.step,
        epoch: state.step as f64 / ctx.steps_per_epoch as f64,
        train_loss: state.loss_since_eval.0 / state.loss_since_eval.1.max(1) as f64,
        learning_rate: ctx.lr,
        validation: v.scores,
        elapsed_s: state.elapsed_s,
        epsilon: ctx.dp.map(|plan| spent_epsilon(plan, state)).transpose()?,
    };
    let msg = format!(
        "step {} epoch {:.2}: train loss {:.4}, validation {} {:.4}{}",
        record.step, record.epoch, record.train_loss, t.metric, v.value, v.note
    );
    progress.suspend(|| tracing::info!("{msg}"));
    let mut scalars = v.scalars;
    scalars.push(("train/epoch_loss".into(), record.train_loss));
    let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    tensorboard.scalars(state.step, &refs)?;
    tensorboard.flush()?;
    state.history.push(record);
    state.loss_since_eval = (0.0, 0);
    if state.record_validation(
        v.value,
        ctx.config.metric_higher_is_better(),
        t.early_stopping_patience,
    ) {
        save_weights(model, ctx.best_dir, lora)?;
    } else if state.stopped_early {
        progress.suspend(|| {
            tracing::info!(
                "early stopping: no improvement of validation {} in {} evaluations",
                t.metric,
                state.evals_without_improvement
            )
        });
    }
    rewrite_history(ctx.metrics_path, &state.history)?;
    if let Some(hook) = &ctx.options.on_eval {
        let evaluation = state.history.len();
        if (hook.0)(evaluation, state.step, v.value) {
            tensorboard.flush()?;
            return Err(Error::Pruned {
                evaluation,
                step: state.step,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_in_order_with_sizes_within_one() {
        for (len, parts) in [(15, 2), (16, 2), (3, 4), (0, 3), (7, 1), (10, 3)] {
            let r = shard_ranges(len, parts);
            assert_eq!(r.len(), parts);
            assert_eq!(r.first().map(|x| x.start), Some(0));
            assert_eq!(r.last().map(|x| x.end), Some(len));
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start, "contiguous");
                assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
            }
        }
        assert_eq!(shard_ranges(15, 2), vec![0..8, 8..15]);
    }

    #[test]
    fn shard_seeds_differ_and_shard_zero_keeps_the_micro_batch_seed() {
        let s = step_seed(42, 3, 1);
        assert_eq!(shard_seed(s, 0), s);
        let seeds: std::collections::HashSet<u64> = (0..8).map(|k| shard_seed(s, k)).collect();
        assert_eq!(seeds.len(), 8);
    }
}
