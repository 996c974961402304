//! Numerical parity with PyTorch + `transformers`: `tunekit embed` reproduces the mean-pooled
//! embeddings in `tests/fixtures/parity_minilm.json` (made by `tools/make_parity_fixture.py`).
//! Tolerances: cosine ≥ 0.9999 and max |diff| ≤ 1e-4 per sentence (f32 on different kernels).

mod common;

use common::*;

#[test]
fn embed_matches_transformers_mean_pooling() {
    let fixture = json(&fixture("parity_minilm.json"));
    let sentences: Vec<String> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(sentences.len() >= 8);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("sentences.jsonl");
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| serde_json::json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = tmp.path().join("embeddings.jsonl");
    let out = tunekit(&[
        "embed",
        "--model",
        minilm().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        // The fixture holds transformers' raw masked mean at 128 tokens; the default follows
        // the sentence-transformers config (input_embed_resume.rs tests that).
        "--raw",
        "--max-length",
        "128",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<Vec<f64>> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let want = fixture["mean_pooled"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w: Vec<f64> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(g.len(), w.len());
        let dot: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
        let na: f64 = g.iter().map(|a| a * a).sum::<f64>().sqrt();
        let nb: f64 = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        let cosine = dot / (na * nb);
        let max_diff = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            cosine >= 0.9999,
            "sentence {i} {:?}: cosine {cosine}",
            sentences[i]
        );
        assert!(
            max_diff <= 1e-4,
            "sentence {i} {:?}: max |diff| {max_diff}",
            sentences[i]
        );
    }
}

#[test]
fn tokenizer_matches_transformers_ids() {
    let fixture = json(&fixture("parity_minilm.json"));
    let tok =
        tunekit::tokenize::TextTokenizer::from_file(&minilm().join("tokenizer.json"), 128).unwrap();
    let sentences: Vec<&str> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let got = tok.encode_batch(&sentences, None).unwrap();
    for (i, (g, w)) in got
        .iter()
        .zip(fixture["input_ids"].as_array().unwrap())
        .enumerate()
    {
        let w: Vec<u32> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(g.ids, w, "token ids of sentence {i}");
    }
}
