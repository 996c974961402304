//! Sentence-embedding fine-tuning on (anchor, positive) pairs with in-batch negatives:
//! sentence-transformers' `MultipleNegativesRankingLoss`. Each anchor's pooled, L2-normalised
//! embedding is scored against every positive of the batch by cosine similarity × scale; the
//! loss is the cross-entropy of picking its own positive. Other pairs' positives are the
//! negatives, so larger batches give harder training and no labels are needed.
//!
//! Evaluation ranks, for every validation anchor, all validation positives by cosine
//! similarity: mean reciprocal rank, recall@1 and recall@5 of the true positive, and the loss
//! over that whole candidate set.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

use super::Scores;

/// Rows scaled to unit L2 norm (a zero row stays zero).
pub fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

/// Summed in-batch-negatives loss of anchors `[n, h]` and their positives `[n, h]`.
pub fn contrastive_sum(anchors: Tensor<2>, positives: Tensor<2>, scale: f64) -> Tensor<1> {
    let n = anchors.dims()[0];
    let sim = normalize(anchors)
        .matmul(normalize(positives).transpose())
        .mul_scalar(scale);
    // −log softmax at the diagonal: the anchor's own positive.
    let logp = log_softmax(sim, 1);
    let eye = Tensor::<2>::eye(n, &logp.device());
    (logp * eye).sum().neg()
}

/// Retrieval scores of anchor embeddings against positive embeddings (row i's positive is
/// row i), both `[n][h]` and already normalised.
pub fn retrieval_scores(anchors: &[Vec<f32>], positives: &[Vec<f32>], scale: f64) -> Scores {
    let n = anchors.len();
    let (mut rr, mut r1, mut r5, mut loss) = (0.0f64, 0usize, 0usize, 0.0f64);
    for (i, a) in anchors.iter().enumerate() {
        let sims: Vec<f64> = positives
            .iter()
            .map(|p| a.iter().zip(p).map(|(x, y)| f64::from(x * y)).sum())
            .collect();
        // Rank of the true positive: 1 + candidates scoring strictly higher.
        let rank = 1 + sims.iter().filter(|&&s| s > sims[i]).count();
        rr += 1.0 / rank as f64;
        r1 += usize::from(rank == 1);
        r5 += usize::from(rank <= 5);
        let max = sims
            .iter()
            .fold(f64::NEG_INFINITY, |m, &s| m.max(s * scale));
        let lse = max
            + sims
                .iter()
                .map(|s| (s * scale - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - sims[i] * scale;
    }
    let d = n.max(1) as f64;
    Scores::from([
        ("mrr".to_string(), rr / d),
        ("recall_at_1".to_string(), r1 as f64 / d),
        ("recall_at_5".to_string(), r5 as f64 / d),
        ("loss".to_string(), loss / d),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn contrastive_loss_equals_the_cross_entropy_over_scaled_cosines() {
        let d = burn::tensor::Device::flex();
        let a = vec![1.0f32, 0.0, 0.5, 0.5, -1.0, 2.0];
        let p = vec![0.9f32, 0.1, 0.0, 1.0, -1.0, 1.5];
        let at = Tensor::<2>::from_data(TensorData::new(a.clone(), [3, 2]), &d);
        let pt = Tensor::<2>::from_data(TensorData::new(p.clone(), [3, 2]), &d);
        let got = crate::model::weights::to_vec(contrastive_sum(at, pt, 20.0)).unwrap()[0];
        let unit = |v: &[f32]| -> Vec<f32> {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        };
        let an: Vec<Vec<f32>> = a.chunks(2).map(unit).collect();
        let pn: Vec<Vec<f32>> = p.chunks(2).map(unit).collect();
        let want = retrieval_scores(&an, &pn, 20.0)["loss"] * 3.0;
        assert!((f64::from(got) - want).abs() < 1e-3, "{got} vs {want}");
    }

    #[test]
    fn ranks_count_only_strictly_better_candidates() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let p = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.6, 0.8]];
        let s = retrieval_scores(&a, &p, 1.0);
        // Anchor 0: rank 1 (tie with 1 does not count); anchor 1: positive scores 0 and
        // candidate 2 scores 0.8 → rank 2; anchor 2: rank 1.
        assert!((s["mrr"] - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        assert!((s["recall_at_1"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s["recall_at_5"], 1.0);
    }
}
