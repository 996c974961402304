//! `tunekit generate` through the real binary on the real SmolLM2-135M-Instruct GGUF
//! (`scripts/fetch-assets.sh`): the chat-templated greedy completion equals transformers'
//! (fixture `tests/fixtures/llm/smollm2.json`), `--raw`, `--stop`, `--input`, and bad input
//! (missing file, truncated file, unsupported quantisation type, bad flags) exits with code 2.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn smollm() -> PathBuf {
    let p = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "assets missing: run scripts/fetch-assets.sh first"
    );
    p
}

#[test]
fn generate_prints_the_greedy_chat_completion_transformers_gives() {
    let fx = json(&fixture("llm/smollm2.json"));
    let case = &fx["generate"][0];
    let question = case["messages"][0]["content"].as_str().unwrap();
    let want = case["new_text"].as_str().unwrap();
    let model = smollm();
    let o = tunekit(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        question,
        "--max-new-tokens",
        "24",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{want}\n"));
    // It ended at eos, so nothing was cut; a budget of 2 tokens cuts it, and says so.
    assert!(
        !stderr(&o).contains("stopped at --max-new-tokens"),
        "{}",
        stderr(&o)
    );
    let o = tunekit(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        question,
        "--max-new-tokens",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cut = stdout(&o);
    assert!(
        want.starts_with(cut.trim_end_matches('\n')),
        "{cut:?} vs {want:?}"
    );
    assert!(
        stderr(&o).contains("stopped at --max-new-tokens 2"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn generate_raw_stops_at_a_stop_string_and_reads_an_input_file() {
    let model = smollm();
    let m = model.to_str().unwrap();
    let o = tunekit(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "The capital of France is",
        "--raw",
        "--max-new-tokens",
        "12",
        "--stop",
        ".",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Paris") && !out.contains('.'), "{out:?}");

    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"Say hi.\"}\n\n{\"prompt\": \"Count to three.\"}\n",
    )
    .unwrap();
    let o = tunekit(&[
        "generate",
        "--model",
        m,
        "--input",
        input.to_str().unwrap(),
        "--max-new-tokens",
        "3",
        "--temperature",
        "0.7",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["prompt"], "Count to three.");
    assert!(
        lines
            .iter()
            .all(|l| !l["completion"].as_str().unwrap().is_empty())
    );
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A llama GGUF with no layers whose embedding is Q4_K (ggml type 12).
fn q4k_gguf(path: &Path) {
    let mut kv = Vec::new();
    let mut n_kv = 0u64;
    let mut u32_kv = |kv: &mut Vec<u8>, k: &str, v: u32| {
        put_str(kv, k);
        kv.extend(4u32.to_le_bytes());
        kv.extend(v.to_le_bytes());
        n_kv += 1;
    };
    u32_kv(&mut kv, "llama.embedding_length", 256);
    u32_kv(&mut kv, "llama.attention.head_count", 1);
    u32_kv(&mut kv, "llama.feed_forward_length", 8);
    u32_kv(&mut kv, "llama.block_count", 0);
    u32_kv(&mut kv, "llama.vocab_size", 1);
    put_str(&mut kv, "llama.attention.layer_norm_rms_epsilon");
    kv.extend(6u32.to_le_bytes());
    kv.extend(1e-5f32.to_le_bytes());
    put_str(&mut kv, "general.architecture");
    kv.extend(8u32.to_le_bytes());
    put_str(&mut kv, "llama");
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend((n_kv + 2).to_le_bytes());
    out.extend(kv);
    put_str(&mut out, "token_embd.weight");
    out.extend(2u32.to_le_bytes());
    out.extend(256u64.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend(12u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend([0u8; 144]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn generate_bad_input_exits_2_naming_the_file_tensor_or_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.gguf");
    let o = tunekit(&[
        "generate",
        "--model",
        missing.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_bad_input(&o, &["nope.gguf"]);

    let q4k = tmp.path().join("q4k.gguf");
    q4k_gguf(&q4k);
    let o = tunekit(&[
        "generate",
        "--model",
        q4k.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_bad_input(&o, &["q4k.gguf", "token_embd.weight", "Q4_K"]);

    let cut = tmp.path().join("cut.gguf");
    let bytes = std::fs::read(smollm()).unwrap();
    std::fs::write(&cut, &bytes[..4096]).unwrap();
    let o = tunekit(&[
        "generate",
        "--model",
        cut.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_bad_input(&o, &["cut.gguf", "truncated"]);

    let o = tunekit(&[
        "generate",
        "--model",
        smollm().to_str().unwrap(),
        "--prompt",
        "hi",
        "--top-p",
        "0",
    ]);
    assert_bad_input(&o, &["--top-p"]);
}
