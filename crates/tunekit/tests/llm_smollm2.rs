//! The real SmolLM2-135M-Instruct Q4_1 GGUF (`scripts/fetch-assets.sh`) against transformers
//! 5.x loading the same file with `gguf_file=` (fixture: `tools/make_llm_fixtures.py`):
//! tokenizer ids, the chat template, next-token logits (within 1e-4) and greedy generation
//! (token for token).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;
use tunekit::llm::{ChatTemplate, GenerationConfig, LanguageModel, Message, tokenizer};
use tunekit::model::gguf::GgufFile;
use tunekit::model::llama::KvCache;
use tunekit::model::weights::to_vec;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_path() -> PathBuf {
    let p = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

fn fixture() -> Value {
    let p = root().join("crates/tunekit/tests/fixtures/llm/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn gguf_tokenizer_ids_equal_transformers() {
    let file = GgufFile::open(&gguf_path()).unwrap();
    let tok = tokenizer::tokenizer_from_gguf(&file).unwrap();
    let fx = fixture();
    for case in fx["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        let back = tok.decode(&got, false).unwrap();
        assert_eq!(back, text, "decode of {text:?}");
    }
}

#[test]
fn gguf_chat_template_renders_as_transformers() {
    let file = GgufFile::open(&gguf_path()).unwrap();
    let tok = tokenizer::tokenizer_from_gguf(&file).unwrap();
    let src = file.get_str("tokenizer.chat_template").unwrap();
    let t = ChatTemplate::new(src, "<|im_start|>", "<|im_end|>").unwrap();
    for case in fixture()["chat"].as_array().unwrap() {
        let text = t.render(&messages(&case["messages"]), true).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap());
        let got = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&case["ids"]));
    }
}

#[test]
fn smollm2_logits_match_transformers_within_1e_4() {
    let device = Device::flex();
    let lm = LanguageModel::open(&gguf_path(), &device).unwrap();
    let fx = fixture();
    let mut worst = 0.0f32;
    for case in fx["logits"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        assert_eq!(lm.encode(case["text"].as_str().unwrap()).unwrap(), prompt);
        let input: Vec<i64> = prompt.iter().map(|&x| i64::from(x)).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(input, [1, prompt.len()]), &device);
        let logits = to_vec(lm.model.forward(input, &mut KvCache::new(), false)).unwrap();
        let vocab = lm.model.config.vocab_size;
        assert_eq!(logits.len(), prompt.len() * vocab);
        for (pos, want) in case["positions"].as_array().unwrap().iter().enumerate() {
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            let stride = want["stride"].as_u64().unwrap() as usize;
            let every = want["every"].as_array().unwrap();
            assert_eq!(every.len(), vocab.div_ceil(stride));
            let top = want["top"].as_array().unwrap();
            let pairs = top
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()));
            let strided = every
                .iter()
                .enumerate()
                .map(|(i, v)| (i * stride, v.as_f64().unwrap()));
            for (id, v) in pairs.chain(strided) {
                let d = (row[id] - v as f32).abs();
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "prompt {:?} position {pos} id {id}: {} vs {v}",
                    case["text"],
                    row[id]
                );
            }
            let best = tunekit::llm::generate::argmax(row) as u64;
            assert_eq!(
                best,
                top[0][0].as_u64().unwrap(),
                "argmax at position {pos}"
            );
        }
    }
    eprintln!("largest logit difference: {worst:e}");
}

#[test]
fn smollm2_greedy_generation_equals_transformers() {
    let device = Device::flex();
    let lm = LanguageModel::open(&gguf_path(), &device).unwrap();
    for case in fixture()["generate"].as_array().unwrap() {
        let want = ids(&case["new_ids"]);
        let prompt = lm
            .chat_template
            .as_ref()
            .unwrap()
            .render(&messages(&case["messages"]), true)
            .unwrap();
        assert_eq!(lm.encode(&prompt).unwrap(), ids(&case["prompt_ids"]));
        let cfg = GenerationConfig {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let g = lm.complete(&prompt, &cfg).unwrap();
        let eos = want.last().is_some_and(|t| lm.eos_token_ids.contains(t));
        let expected = if eos {
            &want[..want.len() - 1]
        } else {
            &want[..]
        };
        assert_eq!(g.ids, expected, "{prompt:?}");
        assert_eq!(g.text, case["new_text"].as_str().unwrap());
    }
}
