//! Issue 18, part 5: the real all-mpnet-base-v2 (MPNet, fetched by
//! `scripts/fetch-assets.sh --with-mpnet` into `assets/models/all-mpnet-base-v2`; 438 MB, so
//! CI does not fetch it and this test says so and passes without it): `tunekit embed`
//! reproduces sentence-transformers' `encode()` (fixture `st_embed_mpnet.json`, made by
//! `tools/make_st_embed_fixture.py`): cosine ≥ 0.9999 and unit norm for every sentence,
//! including one truncated at `max_seq_length` 384.

mod common;

use common::*;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn embed_on_all_mpnet_base_v2_matches_sentence_transformers() {
    let model = root().join("assets/models/all-mpnet-base-v2");
    if !model.join("config.json").is_file() {
        eprintln!(
            "all-mpnet-base-v2 not fetched (scripts/fetch-assets.sh --with-mpnet): nothing to compare"
        );
        return;
    }
    let f = json(&fixture("st_embed_mpnet.json"));
    let sentences: Vec<&str> = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| serde_json::json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let o = tunekit(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("max length 384"), "{}", stderr(&o));
    let got: Vec<Vec<f64>> = read_jsonl(&output)
        .iter()
        .map(|r| floats(&r["embedding"]))
        .collect();
    let want: Vec<Vec<f64>> = f["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let dot: f64 = g.iter().zip(w).map(|(a, b)| a * b).sum();
        let (ng, nw) = (
            g.iter().map(|a| a * a).sum::<f64>().sqrt(),
            w.iter().map(|a| a * a).sum::<f64>().sqrt(),
        );
        assert!((ng - 1.0).abs() < 1e-4, "sentence {i}: norm {ng}");
        assert!(
            dot / (ng * nw) >= 0.9999,
            "sentence {i}: cosine {}",
            dot / (ng * nw)
        );
    }
}
