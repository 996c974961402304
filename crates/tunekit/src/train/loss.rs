//! Losses of classification training, summed over a batch (callers divide by the
//! accumulation group's size, so micro-batches reproduce one large batch): cross-entropy with
//! label smoothing and class weights, focal loss, the distillation term, and scikit-learn's
//! balanced class weights.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// Summed cross-entropy of a batch (a `[1]` tensor): summed, not averaged, so that
/// accumulated micro-batches divide by the whole accumulation group's size and reproduce the
/// large-batch gradient exactly.
pub fn cross_entropy_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
) -> Tensor<1> {
    cross_entropy_weighted_sum(logits, labels, None, 0.0)
}

/// Σᵢ wᵢ · ((1−ε)·(−log pᵢ[yᵢ]) + ε·mean_c(−log pᵢ[c])): cross-entropy with label smoothing ε
/// (PyTorch's formulation) and per-example weights `wᵢ` (the class weight of yᵢ). Callers
/// divide by Σ wᵢ over the accumulation group, as PyTorch's weighted mean does.
pub fn cross_entropy_weighted_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
    weights: Option<Tensor<1>>,
    smoothing: f64,
) -> Tensor<1> {
    classification_loss_sum(logits, labels, weights, smoothing, None)
}

/// [`cross_entropy_weighted_sum`], or with `focal_gamma = Some(γ)` the focal loss
/// Σᵢ wᵢ · (1 − pᵢ[yᵢ])^γ · (−log pᵢ[yᵢ]) (Lin et al. 2017; class weights play the role of α).
/// γ = 0 is cross-entropy. Label smoothing does not combine with focal loss (config rejects it).
pub fn classification_loss_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
    weights: Option<Tensor<1>>,
    smoothing: f64,
    focal_gamma: Option<f64>,
) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let logp_y = logp.clone().gather(1, labels.reshape([n, 1]));
    let mut per = logp_y.clone().neg();
    if let Some(gamma) = focal_gamma {
        // (1 − p)^γ with p = exp(log p); the modulating factor is differentiated through too,
        // as in the reference implementations (torchvision.ops.sigmoid_focal_loss et al.).
        let modulating = logp_y
            .exp()
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .powf_scalar(gamma);
        per = per * modulating;
    }
    if smoothing > 0.0 {
        let uniform = logp.mean_dim(1).neg();
        per = per.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing);
    }
    if let Some(w) = weights {
        per = per * w.reshape([n, 1]);
    }
    per.sum()
}

/// Σᵢ T² · KL(softmax(tᵢ/T) ‖ softmax(sᵢ/T)): Hinton et al.'s soft-target term, scaled by T²
/// so its gradients keep their size as T changes (as in DistilBERT and the HF examples).
pub fn distillation_kl_sum(student: Tensor<2>, teacher: Tensor<2>, temperature: f64) -> Tensor<1> {
    let t = temperature;
    let log_q = log_softmax(student.div_scalar(t), 1);
    let log_p = log_softmax(teacher.div_scalar(t), 1);
    let p = log_p.clone().exp();
    (p * (log_p - log_q)).sum().mul_scalar(t * t)
}

/// `n / (classes × n_c)` per class (scikit-learn's "balanced"); 1.0 for classes absent from
/// the training data (they never occur as a target there).
pub fn balanced_class_weights(labels: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                labels.len() as f64 / (classes * c) as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, TensorData};

    fn loss(logits: Vec<f32>, labels: Vec<i64>, weights: Option<Vec<f32>>, eps: f64) -> f64 {
        let d = burn::tensor::Device::flex();
        let n = labels.len();
        let c = logits.len() / n;
        let l = Tensor::<2>::from_data(TensorData::new(logits, [n, c]), &d);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &d);
        let w = weights.map(|w| Tensor::<1>::from_data(TensorData::new(w, [n]), &d));
        let v = crate::model::weights::to_vec(cross_entropy_weighted_sum(l, y, w, eps)).unwrap();
        f64::from(v[0])
    }

    #[test]
    fn label_smoothing_matches_the_pytorch_formula() {
        // logits [1, 2, 0], target 1: log p = x - logsumexp(x).
        let lse = (1f64.exp() + 2f64.exp() + 1.0).ln();
        let logp = [1.0 - lse, 2.0 - lse, -lse];
        let nll = -logp[1];
        let uniform = -(logp.iter().sum::<f64>()) / 3.0;
        let want = 0.9 * nll + 0.1 * uniform;
        let got = loss(vec![1.0, 2.0, 0.0], vec![1], None, 0.1);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!((loss(vec![1.0, 2.0, 0.0], vec![1], None, 0.0) - nll).abs() < 1e-6);
    }

    #[test]
    fn class_weights_scale_each_example() {
        let plain = loss(vec![0.5, -0.5, 0.2, 0.1], vec![0, 1], None, 0.0);
        let a = loss(vec![0.5, -0.5], vec![0], None, 0.0);
        let b = loss(vec![0.2, 0.1], vec![1], None, 0.0);
        assert!((plain - (a + b)).abs() < 1e-6);
        let weighted = loss(
            vec![0.5, -0.5, 0.2, 0.1],
            vec![0, 1],
            Some(vec![2.0, 0.5]),
            0.0,
        );
        assert!((weighted - (2.0 * a + 0.5 * b)).abs() < 1e-6);
    }

    #[test]
    fn balanced_weights_match_scikit_learn() {
        // n / (classes × n_c) with n = 4, classes = 3, as compute_class_weight("balanced");
        // scikit-learn rejects a class absent from y, tunekit gives it weight 1.
        let w = balanced_class_weights(&[0, 0, 0, 1], 3);
        assert!((w[0] - 4.0 / 9.0).abs() < 1e-12, "{w:?}");
        assert!((w[1] - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(w[2], 1.0);
    }

    #[test]
    fn focal_loss_matches_its_definition_and_reduces_to_cross_entropy_at_gamma_zero() {
        let d = burn::tensor::Device::flex();
        let run = |gamma: f64| {
            let l =
                Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.5, 0.1, 1.0], [2, 2]), &d);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &d);
            let v = crate::model::weights::to_vec(classification_loss_sum(
                l,
                y,
                None,
                0.0,
                Some(gamma),
            ))
            .unwrap();
            f64::from(v[0])
        };
        // Σ (1 − p_y)^γ · −log p_y, computed in f64 by hand (Python, math module).
        assert!(
            (run(2.0) - 0.035_206_317_990_844_664).abs() < 1e-6,
            "{}",
            run(2.0)
        );
        assert!((run(0.0) - 0.542_567_152_714_840_4).abs() < 1e-6);
        assert!((run(0.0) - loss(vec![2.0, 0.5, 0.1, 1.0], vec![0, 1], None, 0.0)).abs() < 1e-7);
    }

    #[test]
    fn distillation_term_matches_t_squared_kl() {
        let d = burn::tensor::Device::flex();
        let m = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, 3]), &d);
        let student = m(vec![1.0, -0.5, 0.2, 0.3, 0.3, 2.0]);
        let teacher = m(vec![2.0, 0.0, -1.0, 0.0, 1.0, 0.5]);
        let v = crate::model::weights::to_vec(distillation_kl_sum(student, teacher.clone(), 2.0))
            .unwrap();
        // Σ T²·Σ_c p log(p/q), computed in f64 by hand (Python, math module).
        assert!(
            (f64::from(v[0]) - 0.791_154_983_371_120_1).abs() < 1e-6,
            "{v:?}"
        );
        let same =
            crate::model::weights::to_vec(distillation_kl_sum(teacher.clone(), teacher, 2.0))
                .unwrap();
        assert!(
            same[0].abs() < 1e-6,
            "KL of a distribution with itself is 0"
        );
    }
}
