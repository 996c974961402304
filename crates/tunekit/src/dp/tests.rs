//! DP-SGD's pieces on a tiny real model (the random RoBERTa fixture of
//! `tools/make_arch_fixtures.py`): per-example clipping against a naive computation, the
//! Poisson sampler, the default δ and the plan's refusals.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::accountant::{Accountant, Composition};
use super::clip::{clip_factor, clipped_sum};
use super::{DpOptions, DpPlan, default_delta, push_steps};
use crate::batch::collate;
use crate::error::{Error, Result};
use crate::model::weights::{ClassifierSpec, DropoutOverride, HeadKind, load_classifier, to_vec};
use crate::model::{ModelDir, Pooling, SequenceClassifier};
use crate::tokenize::Tokens;
use crate::train::fit::{Finished, Objective, Validation};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch/roberta/seq")
}

/// Five examples of 3 to 11 tokens (so a batch of them is padded), three classes.
struct Toy {
    dir: ModelDir,
    examples: Vec<Tokens>,
    labels: Vec<i64>,
}

impl Toy {
    fn new() -> Self {
        let lens = [3usize, 11, 6, 4, 9];
        let examples = lens
            .iter()
            .enumerate()
            .map(|(e, &n)| {
                let mut ids = vec![0u32];
                ids.extend((1..n - 1).map(|j| 5 + ((e * 37 + j * 11) % 200) as u32));
                ids.push(2);
                Tokens {
                    type_ids: vec![0; ids.len()],
                    ids,
                    truncated: false,
                }
            })
            .collect();
        Toy {
            dir: ModelDir::open(&fixture().display().to_string()).expect("fixture"),
            examples,
            labels: vec![0, 2, 1, 1, 0],
        }
    }

    /// Cross-entropy of each example of `idx`, collated (padded) together: `[idx.len()]`.
    fn losses(&self, model: &SequenceClassifier, idx: &[usize], ad: &Device) -> Tensor<1> {
        let toks: Vec<&Tokens> = idx.iter().map(|&i| &self.examples[i]).collect();
        let batch = collate(&toks, 1, ad);
        let logits = model.forward(&batch);
        let y: Vec<i64> = idx.iter().map(|&i| self.labels[i]).collect();
        let y = Tensor::<2, Int>::from_data(TensorData::new(y, [idx.len(), 1]), ad);
        let picked: Tensor<2> = log_softmax(logits, 1).gather(1, y);
        picked.neg().reshape([idx.len()])
    }
}

impl Objective for Toy {
    type Scores = f64;
    type Model = SequenceClassifier;
    fn build(
        &mut self,
        _: &crate::config::RunConfig,
        _: Option<&std::path::Path>,
        _: &Device,
    ) -> Result<crate::train::fit::Built<SequenceClassifier>> {
        Err(Error::Engine("not used".into()))
    }
    fn layered_config(&self) -> Option<&crate::model::BertConfig> {
        Some(&self.dir.config)
    }
    fn train_lengths(&self) -> Vec<usize> {
        self.examples.iter().map(|t| t.ids.len()).collect()
    }
    fn describe(&self) -> String {
        "toy".into()
    }
    fn normaliser(&self, group: &[Vec<usize>]) -> f64 {
        group.iter().map(Vec::len).sum::<usize>() as f64
    }
    fn loss_sum(
        &self,
        model: &SequenceClassifier,
        idx: &[usize],
        ad: &Device,
    ) -> Result<Tensor<1>> {
        Ok(self.losses(model, idx, ad).sum())
    }
    fn validate(&self, _: &SequenceClassifier, _: &Device) -> Result<Option<Validation<f64>>> {
        Ok(None)
    }
    fn finish(self, _: Finished<'_, f64>) -> Result<crate::train::RunMetrics> {
        Err(Error::Engine("not used".into()))
    }
}

fn model(toy: &Toy, ad: &Device, lora: bool) -> SequenceClassifier {
    let spec = ClassifierSpec {
        num_labels: 3,
        pooling: Pooling::Cls,
        dropout: DropoutOverride {
            hidden: Some(0.0),
            attention: Some(0.0),
        },
        seed: 3,
        require_head: false,
        head: HeadKind::Sequence,
    };
    let m = load_classifier(
        &toy.dir.dir.join("model.safetensors"),
        &toy.dir.config,
        &spec,
        ad,
    )
    .expect("load")
    .0;
    if !lora {
        return m;
    }
    let opts: crate::model::lora::LoraOptions = toml::from_str("rank = 4").expect("opts");
    let m = crate::model::lora::apply(m, &opts, &toy.dir.config);
    // B starts at 0: move it off zero so the adapters' A matrices get gradients too.
    struct Bump;
    impl burn::module::ModuleMapper for Bump {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !param.is_require_grad() {
                return param;
            }
            param
                .map(|t| {
                    // A fresh leaf (not `t + bump`, which would be a graph node).
                    let v: Vec<f32> = to_vec(t.clone())
                        .expect("read")
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| x + ((i * 7919 % 97) as f32 - 48.0) * 1e-3)
                        .collect();
                    Tensor::<D>::from_data(TensorData::new(v, t.shape()), &t.device())
                })
                .set_require_grad(true)
        }
    }
    m.map(&mut Bump)
}

/// Every gradient of `grads` as host vectors, by parameter id.
fn host(model: &SequenceClassifier, grads: &GradientsParams) -> BTreeMap<u64, Vec<f64>> {
    struct V<'a>(&'a GradientsParams, BTreeMap<u64, Vec<f64>>);
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                let v = to_vec(g)
                    .expect("read")
                    .into_iter()
                    .map(f64::from)
                    .collect();
                self.1.insert(param.id.val(), v);
            }
        }
    }
    let mut v = V(grads, BTreeMap::new());
    model.visit(&mut v);
    v.1
}

/// The reference: every example's gradient taken from ONE padded batch of all examples (its
/// row of the loss alone), clipped and summed on the host in f64.
fn naive(
    toy: &Toy,
    model: &SequenceClassifier,
    ad: &Device,
    c: f64,
) -> (BTreeMap<u64, Vec<f64>>, usize) {
    let all: Vec<usize> = (0..toy.examples.len()).collect();
    let mut sum: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut clipped = 0;
    for i in 0..all.len() {
        let row = toy.losses(model, &all, ad).narrow(0, i, 1).sum();
        let g = host(model, &GradientsParams::from_grads(row.backward(), model));
        let norm = g.values().flatten().map(|x| x * x).sum::<f64>().sqrt();
        let f = clip_factor(norm, c);
        clipped += usize::from(f < 1.0);
        for (id, v) in g {
            let acc = sum.entry(id).or_insert_with(|| vec![0.0; v.len()]);
            for (a, x) in acc.iter_mut().zip(v) {
                *a += f * x;
            }
        }
    }
    (sum, clipped)
}

fn per_example_norms(toy: &Toy, model: &SequenceClassifier, ad: &Device) -> Vec<f64> {
    (0..toy.examples.len())
        .map(|i| {
            let g = host(
                model,
                &GradientsParams::from_grads(toy.losses(model, &[i], ad).sum().backward(), model),
            );
            g.values().flatten().map(|x| x * x).sum::<f64>().sqrt()
        })
        .collect()
}

fn clipped_sums_equal_naive(lora: bool) {
    let toy = Toy::new();
    let ad = Device::flex().autodiff();
    let model = model(&toy, &ad, lora);
    let mut norms = per_example_norms(&toy, &model, &ad);
    norms.sort_by(f64::total_cmp);
    // A bound between the norms: some examples are clipped, some are not.
    let c = (norms[1] + norms[2]) / 2.0;
    let (want, clipped) = naive(&toy, &model, &ad, c);
    assert!(
        clipped > 0 && clipped < toy.examples.len(),
        "{clipped} clipped of {norms:?}"
    );
    let idx: Vec<usize> = (0..toy.examples.len()).collect();
    let (grads, _) = clipped_sum(&toy, &model, &idx, c, &ad, (7, 0)).expect("clip");
    let got = host(&model, &grads);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let mut worst = 0.0f64;
    for (id, w) in &want {
        for (a, b) in got[id].iter().zip(w) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
    }
    assert!(
        worst <= 1e-5,
        "clipped sum differs from the naive one by {worst:e}"
    );
}

#[test]
fn clipped_summed_gradients_equal_naive_per_example_computation_full_finetuning() {
    clipped_sums_equal_naive(false);
}

#[test]
fn clipped_summed_gradients_equal_naive_per_example_computation_lora() {
    clipped_sums_equal_naive(true);
}

fn options(toml_text: &str) -> DpOptions {
    toml::from_str(toml_text).expect("options")
}

#[test]
fn poisson_batches_are_seeded_by_step_and_sample_at_rate_q() {
    let plan = DpPlan::new(&options("noise_multiplier = 1.0"), 2000, 100, 40, &[]).expect("plan");
    let a = plan.epoch_batches(1, 0, 20, 2);
    assert_eq!(a.len(), 40, "20 steps × 2 micro-batches");
    assert_eq!(
        a,
        plan.epoch_batches(1, 0, 20, 2),
        "same seed, same batches"
    );
    assert_ne!(
        a,
        plan.epoch_batches(1, 1, 20, 2),
        "another epoch, other batches"
    );
    let sizes: Vec<usize> = a.chunks(2).map(|g| g[0].len() + g[1].len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert!((mean - 100.0).abs() < 10.0, "mean batch {mean}");
    assert!(
        sizes.iter().any(|&s| s != sizes[0]),
        "variable batch sizes: {sizes:?}"
    );
}

#[test]
fn default_delta_is_the_largest_power_of_ten_below_one_over_ten_n() {
    assert_eq!(default_delta(8530), 1e-5);
    assert_eq!(default_delta(1000), 1e-4);
    assert_eq!(default_delta(1001), 1e-5);
    assert_eq!(default_delta(10), 1e-2);
}

#[test]
fn a_plan_spending_more_than_target_epsilon_is_refused_up_front() {
    let o = options("target_epsilon = 1.0\nnoise_multiplier = 0.5");
    let err = DpPlan::new(&o, 1000, 100, 500, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("above target_epsilon = 1"), "{err}");
    // Solved σ: the plan spends at most the target.
    let o = options("target_epsilon = 1.0");
    let plan = DpPlan::new(&o, 1000, 100, 500, &[]).expect("solved");
    assert!(plan.planned_epsilon <= 1.0 && plan.planned_epsilon > 0.98);
    // A resumed history counts: the remaining steps are accounted on top of it.
    let mut history = Vec::new();
    push_steps(&mut history, plan.noise_multiplier, plan.sample_rate, 250);
    let resumed = DpPlan::new(&o, 1000, 100, 500, &history).expect("resumed");
    assert_eq!(resumed.planned_epsilon, plan.planned_epsilon);
    let spent_half = Accountant::Rdp.epsilon(&history, plan.delta).expect("eps");
    assert!(spent_half < plan.planned_epsilon);
    let err = DpPlan::new(&options("noise_multiplier = 1.0"), 10, 20, 5, &[]).unwrap_err();
    assert!(err.to_string().contains("must not exceed"), "{err}");
}

#[test]
fn push_steps_merges_equal_mechanisms_as_opacus() {
    let mut h = Vec::new();
    push_steps(&mut h, 1.0, 0.1, 1);
    push_steps(&mut h, 1.0, 0.1, 1);
    push_steps(&mut h, 2.0, 0.1, 1);
    assert_eq!(
        h,
        vec![
            Composition {
                noise_multiplier: 1.0,
                sample_rate: 0.1,
                steps: 2
            },
            Composition {
                noise_multiplier: 2.0,
                sample_rate: 0.1,
                steps: 1
            },
        ]
    );
}
