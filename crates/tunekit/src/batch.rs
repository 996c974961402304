//! From tokenised examples to padded tensors: dynamic padding (each batch padded to its own
//! longest example) and length-grouped training order (HF `group_by_length`), both seeded.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::model::EncodedBatch;
use crate::tokenize::Tokens;

/// A tokenised example with its class id (if labelled).
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Tokens.
    pub tokens: Tokens,
    /// Class id.
    pub label: Option<usize>,
}

/// Pad `examples` to the longest one and move them to `device`.
pub fn collate(examples: &[&Tokens], pad_id: u32, device: &Device) -> EncodedBatch {
    let batch = examples.len();
    let seq = examples
        .iter()
        .map(|t| t.ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![i64::from(pad_id); batch * seq];
    let mut types = vec![0i64; batch * seq];
    let mut mask = vec![0f32; batch * seq];
    for (row, t) in examples.iter().enumerate() {
        for (j, (&id, &ty)) in t.ids.iter().zip(t.type_ids.iter()).enumerate() {
            ids[row * seq + j] = i64::from(id);
            types[row * seq + j] = i64::from(ty);
            mask[row * seq + j] = 1.0;
        }
    }
    EncodedBatch {
        input_ids: Tensor::from_data(TensorData::new(ids, [batch, seq]), device),
        token_type_ids: Tensor::from_data(TensorData::new(types, [batch, seq]), device),
        attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
    }
}

/// Class ids as a `[batch]` tensor.
pub fn label_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// Seed for epoch `epoch`'s data order, derived from the run seed.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(epoch as u64 + 1)
}

/// The training batches of one epoch as lists of example indices. With `group_by_length`,
/// indices are shuffled, cut into mega-batches of 50 batches, each sorted by length
/// (longest first), then cut into batches, as `transformers`' `LengthGroupedSampler`; the
/// batch holding the longest example goes first so memory peaks immediately, not mid-run.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    group_by_length: bool,
    seed: u64,
) -> Vec<Vec<usize>> {
    // Batch sizes come validated (config, CLI flags); `max(1)` keeps `chunks` from panicking
    // for a library caller passing 0.
    let batch_size = batch_size.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    if !group_by_length {
        return order.chunks(batch_size).map(|c| c.to_vec()).collect();
    }
    let mega = batch_size * 50;
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for chunk in order.chunks(mega) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
        batches.extend(chunk.chunks(batch_size).map(|c| c.to_vec()));
    }
    let longest = batches
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .map(|(i, _)| i)
        .unwrap_or(0);
    batches.swap(0, longest);
    batches
}

/// The epoch's sample of training indices with minority classes oversampled: every index
/// once, plus indices drawn with replacement from each smaller class until it matches the
/// largest. Its size is the same every epoch (classes × largest count).
pub fn oversampled(labels: &[usize], num_labels: usize, seed: u64) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_labels];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(c) = by_class.get_mut(l) {
            c.push(i);
        }
    }
    let largest = by_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<usize> = (0..labels.len()).collect();
    for class in by_class.iter().filter(|c| !c.is_empty()) {
        for _ in class.len()..largest {
            out.push(class[rng.random_range(0..class.len())]);
        }
    }
    out
}

/// Evaluation batches: indices sorted by length so padding is minimal; callers scatter the
/// results back to the original order.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    // Validated upstream (config, CLI flags); `max(1)`: `chunks(0)` would panic.
    order
        .chunks(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversampling_balances_classes_with_a_fixed_size() {
        let labels: Vec<usize> = (0..100).map(|i| usize::from(i >= 90)).collect();
        let sample = oversampled(&labels, 3, 1);
        assert_eq!(sample.len(), 180);
        let ones = sample.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(ones, 90);
        // Every original example is present at least once.
        let mut seen = sample.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100);
        assert_eq!(sample, oversampled(&labels, 3, 1));
        assert_ne!(sample, oversampled(&labels, 3, 2));
    }

    #[test]
    fn epoch_batches_cover_every_example_once() {
        let lengths: Vec<usize> = (0..1003).map(|i| (i * 37) % 91 + 3).collect();
        for group in [false, true] {
            let batches = epoch_batches(&lengths, 8, group, 7);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, (0..1003).collect::<Vec<_>>());
            assert!(batches.iter().all(|b| b.len() <= 8));
        }
    }

    #[test]
    fn grouping_reduces_padding_and_is_seeded() {
        let lengths: Vec<usize> = (0..2000).map(|i| (i * 7919) % 120 + 5).collect();
        let padded = |bs: &Vec<Vec<usize>>| -> usize {
            bs.iter()
                .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len())
                .sum()
        };
        let grouped = epoch_batches(&lengths, 32, true, 1);
        let plain = epoch_batches(&lengths, 32, false, 1);
        assert!(
            padded(&grouped) * 10 < padded(&plain) * 8,
            "grouping should cut padding by >20%"
        );
        assert_eq!(grouped, epoch_batches(&lengths, 32, true, 1));
        assert_ne!(grouped, epoch_batches(&lengths, 32, true, 2));
        let max_len = *lengths.iter().max().unwrap();
        assert_eq!(
            grouped[0].iter().map(|&i| lengths[i]).max().unwrap(),
            max_len
        );
    }
}
