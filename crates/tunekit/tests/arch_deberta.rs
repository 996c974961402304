//! DeBERTa-v2 parity with transformers: the fixtures of `tools/make_arch_fixtures.py`
//! (`arch/deberta-v2`: a v3-style config; `arch/deberta-v2-v2style`: separate position
//! projections, no buckets, absolute positions, token types and the ConvLayer) reproduced by
//! tunekit's forward pass — last hidden states and both heads' logits, padded batches (real
//! tokens compared) and each example alone, sentence pairs included — plus the tokenizer's
//! ids and a lossless HF round trip of the tensors.

mod common;

use common::*;
use safetensors::SafeTensors;
use tunekit::model::BertConfig;
use tunekit::model::weights::{HeadKind, classifier_tensors, to_vec};
use tunekit::tokenize::TextTokenizer;

const CONFIGS: [&str; 2] = ["deberta-v2", "deberta-v2-v2style"];

/// Hidden states, sequence logits and token logits of every case of both configs match
/// transformers (cosine ≥ 0.9999, max |diff| ≤ 1e-4), padded and alone, pairs included.
#[test]
fn deberta_v2_forward_matches_transformers() {
    for name in CONFIGS {
        let exp = expected(name);
        let seq = load(name, HeadKind::Sequence);
        let tok = load(name, HeadKind::Token);
        let (mut worst_max, mut worst_cos) = (0f64, 1f64);
        let cases = exp["cases"].as_array().unwrap();
        assert!(cases.len() >= 4);
        assert!(cases.iter().any(|c| !c["pairs"].is_null()));
        for case in cases {
            let label = format!("{name}/{}", case["name"]);
            let (batch, mask) = batch(case);
            let hidden = seq.encoder.forward(&batch);
            let width = hidden.dims()[2];
            let (g, w) = real_tokens(&to_vec(hidden).unwrap(), &case["hidden"], &mask, width);
            let (m1, c1) = check(&format!("{label} hidden"), &g, &w);
            let logits = to_vec(seq.forward(&batch)).unwrap();
            let want: Vec<f32> =
                serde_json::from_value::<Vec<Vec<f32>>>(case["seq_logits"].clone())
                    .unwrap()
                    .concat();
            let (m2, c2) = check(&format!("{label} seq_logits"), &logits, &want);
            let hidden = tok.encoder.forward(&batch);
            let token = to_vec(tok.classifier.forward(tok.dropout.forward(hidden))).unwrap();
            let (g, w) = real_tokens(&token, &case["token_logits"], &mask, 5);
            let (m3, c3) = check(&format!("{label} token_logits"), &g, &w);
            worst_max = worst_max.max(m1).max(m2).max(m3);
            worst_cos = worst_cos.min(c1).min(c2).min(c3);
        }
        eprintln!("{name}: worst max |diff| {worst_max:e}, worst cosine {worst_cos:.9}");
    }
}

/// `TextTokenizer` (with the model's limits) gives the fixture's ids, segment ids and
/// padding id for singles and pairs.
#[test]
fn deberta_v2_tokenizer_reproduces_transformers_ids() {
    for name in CONFIGS {
        let exp = expected(name);
        let dir = fixture(name).join("seq");
        let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
        let tok = TextTokenizer::for_model(&dir.join("tokenizer.json"), 64, &config).unwrap();
        assert_eq!(
            i64::from(tok.pad_id()),
            exp["pad_token_id"].as_i64().unwrap()
        );
        for case in exp["cases"].as_array().unwrap() {
            let texts: Vec<String> = serde_json::from_value(case["texts"].clone()).unwrap();
            let pairs: Option<Vec<String>> = serde_json::from_value(case["pairs"].clone()).unwrap();
            let t: Vec<&str> = texts.iter().map(String::as_str).collect();
            let p: Option<Vec<&str>> = pairs
                .as_ref()
                .map(|p| p.iter().map(String::as_str).collect());
            let got = tok.encode_batch(&t, p.as_deref()).unwrap();
            let ids = ints(&case["input_ids"]);
            let mask = ints(&case["attention_mask"]);
            let types = ints(&case["token_type_ids"]);
            for (row, g) in got.iter().enumerate() {
                let n = mask[row].iter().filter(|&&m| m == 1).count();
                let want: Vec<u32> = ids[row][..n].iter().map(|&i| i as u32).collect();
                assert_eq!(g.ids, want, "{name}/{} row {row}", case["name"]);
                // Segment ids as the model receives them (0 where it has no type table).
                let want_types: Vec<u32> = if config.type_vocab_size > 0 {
                    types[row][..n].iter().map(|&i| i as u32).collect()
                } else {
                    vec![0; n]
                };
                assert_eq!(g.type_ids, want_types, "{name}/{} row {row}", case["name"]);
                assert!(
                    ids[row][n..]
                        .iter()
                        .all(|&i| i == exp["pad_token_id"].as_i64().unwrap())
                );
            }
        }
    }
}

/// `classifier_tensors` of a loaded model is the fixture file, name for name and value for
/// value (so an export loads in transformers as `DebertaV2For…Classification`).
#[test]
fn deberta_v2_hf_tensors_round_trip_the_fixture_files() {
    for name in CONFIGS {
        for head in [HeadKind::Sequence, HeadKind::Token] {
            let model = load(name, head);
            let sub = if head == HeadKind::Sequence {
                "seq"
            } else {
                "token"
            };
            let bytes = std::fs::read(fixture(name).join(sub).join("model.safetensors")).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let mut want: Vec<(String, Vec<usize>, Vec<f32>)> = st
                .tensors()
                .into_iter()
                .map(|(n, v)| {
                    let values = v
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    (n, v.shape().to_vec(), values)
                })
                .collect();
            let mut got = classifier_tensors(&model).unwrap();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            got.sort_by(|a, b| a.0.cmp(&b.0));
            let names = |v: &[(String, Vec<usize>, Vec<f32>)]| {
                v.iter()
                    .map(|t| (t.0.clone(), t.1.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&got), names(&want), "{name}/{sub}");
            assert!(got == want, "{name}/{sub}: values differ");
        }
    }
}
