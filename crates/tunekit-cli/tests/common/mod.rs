//! Shared helpers for the CLI tests: real files, real (small) models, the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Repository root: `TUNEKIT_TEST_ROOT` when a test binary runs from another checkout than
/// the one it was built in (scripts/gpu-check.sh carries built tests to a GPU machine),
/// else the build's.
pub fn root() -> PathBuf {
    match std::env::var_os("TUNEKIT_TEST_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// The `tunekit` binary under test: `TUNEKIT_BIN` when set (carried test binaries, as in
/// [`root`]), else the one cargo built with the tests.
pub fn tunekit_bin() -> PathBuf {
    match std::env::var_os("TUNEKIT_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_tunekit")),
    }
}

/// The fetched all-MiniLM-L6-v2 (scripts/fetch-assets.sh).
pub fn minilm() -> PathBuf {
    let p = root().join("assets/models/all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").is_file(),
        "assets missing: run scripts/fetch-assets.sh first"
    );
    p
}

/// The MR split files.
pub fn mr(split: &str) -> PathBuf {
    root().join(format!("assets/data/mr/{split}.tsv"))
}

/// Data fixtures shipped with the library crate.
pub fn fixture(name: &str) -> PathBuf {
    root().join("crates/tunekit/tests/fixtures").join(name)
}

/// Run the real `tunekit` binary.
pub fn tunekit(args: &[&str]) -> Output {
    tunekit_env(args, &[])
}

/// Run `tunekit` with extra environment variables.
pub fn tunekit_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tunekit_bin());
    cmd.args(args).arg("--quiet").env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tunekit")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert a command failed with exit code 2 and a message containing every `needle`.
pub fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit code 2, got {:?}; stderr: {err}",
        o.status.code()
    );
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "must not panic: {err}");
}

/// A tiny randomly initialised BERT (real architecture, MiniLM's tokenizer) in HF layout.
pub fn tiny_model(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    let parsed = tunekit::model::BertConfig::from_file(&dir.join("config.json")).unwrap();
    tunekit::model::weights::write_random_encoder(&parsed, &dir.join("model.safetensors"), 7)
        .unwrap();
    // Only the tokenizer of the MiniLM asset is needed (not its weights).
    let tokenizer = root().join("assets/models/all-MiniLM-L6-v2/tokenizer.json");
    std::fs::copy(&tokenizer, dir.join("tokenizer.json")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fetch-assets.sh first)",
            tokenizer.display()
        )
    });
    dir.to_path_buf()
}

/// The first `n` data rows of an MR split, written to `dir/name`.
pub fn mr_subset(split: &str, n: usize, dir: &Path) -> PathBuf {
    // MR files are ordered by polarity: take rows spread over the whole file.
    let text = std::fs::read_to_string(mr(split)).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let step = (all.len() - 1) / n;
    let mut lines = vec![all[0]];
    lines.extend((0..n).map(|i| all[1 + i * step]));
    let out = dir.join(format!("{split}.tsv"));
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    out
}

/// A run config for the tiny model on MR subsets; `extra` is appended to `[train]`.
pub fn tiny_config(dir: &Path, model: &Path, train_extra: &str) -> PathBuf {
    let train = mr_subset("train", 192, dir);
    let validation = mr_subset("validation", 48, dir);
    let test = mr_subset("test", 48, dir);
    let cfg = format!(
        "[model]\npath = {model:?}\nmax_length = 64\n\n[data]\ntrain = {train:?}\nvalidation = {validation:?}\ntest = {test:?}\n\n[train]\nbatch_size = 16\nlearning_rate = 1e-3\nweight_decay = 0.01\nwarmup_ratio = 0.1\nseed = 3\n{train_extra}\n\n[run]\nname = \"tiny\"\ndir = {runs:?}\n",
        runs = dir.join("runs")
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Read a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Start `tunekit ARGS --quiet` and SIGKILL it as soon as `ready()` holds (polled every
/// 20 ms, at most 300 s); fails if the command ends first.
pub fn run_and_kill_when(args: &[&str], ready: impl Fn() -> bool) {
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(args)
        .arg("--quiet")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{args:?}: the kill condition never held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Start `tunekit train ARGS --run-dir DIR` and SIGKILL it once a checkpoint at `step` or
/// later exists; returns the step it was killed at.
pub fn train_and_kill(args: &[&str], run_dir: &Path, step: u64) -> u64 {
    let latest = run_dir.join("checkpoints/latest.json");
    let mut all = args.to_vec();
    all.extend(["--run-dir", run_dir.to_str().unwrap()]);
    run_and_kill_when(&all, || {
        std::fs::read_to_string(&latest)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["step"].as_u64().unwrap_or(0) >= step)
    });
    json(&latest)["step"].as_u64().unwrap()
}

/// Token batches as `tools/onnx_logits.py` reads them: padded ids, mask and segment ids.
pub fn batch_json(tokens: &[tunekit::tokenize::Tokens]) -> serde_json::Value {
    let len = tokens.iter().map(|t| t.ids.len()).max().unwrap();
    let pad = |v: &[u32], fill: u32| {
        let mut v: Vec<u32> = v.to_vec();
        v.resize(len, fill);
        v
    };
    serde_json::json!({
        "input_ids": tokens.iter().map(|t| pad(&t.ids, 0)).collect::<Vec<_>>(),
        "attention_mask": tokens.iter().map(|t| pad(&vec![1; t.ids.len()], 0)).collect::<Vec<_>>(),
        "token_type_ids": tokens.iter().map(|t| pad(&t.type_ids, 0)).collect::<Vec<_>>(),
    })
}

/// The tiny model fine-tuned `epochs` epochs on the MR subsets; its exported model directory.
pub fn trained_tiny(dir: &Path, epochs: usize) -> PathBuf {
    let model = tiny_model(&dir.join("tiny-model"));
    let cfg = tiny_config(dir, &model, &format!("epochs = {epochs}"));
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    dir.join("runs/tiny/model")
}

/// Read a JSONL file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `tunekit predict --model MODEL --input INPUT --output OUT` (must succeed); its rows.
pub fn predict_rows(model: &Path, input: &Path, out: &Path) -> Vec<serde_json::Value> {
    let o = tunekit(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    read_jsonl(out)
}

/// Headless Chromium for page checks: `TUNEKIT_CHROMIUM`, else `chromium` (or a sibling) on
/// `PATH`.
pub fn chromium_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TUNEKIT_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("headless Chromium is needed for the report tests: apt-get install chromium");
}

/// Script appended to a copy of a page: after layout, each figure's rendered SVG size and
/// drawn elements, written into the DOM for `--dump-dom`.
const FIGURE_CHECK_SCRIPT: &str = r#"<script>
window.addEventListener('load', () => {
  const out = {};
  for (const f of document.querySelectorAll('figure')) {
    const svg = f.querySelector('svg');
    const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    let drawn = 0, inked = 0;
    if (svg) {
      for (const el of svg.querySelectorAll('polyline,path,rect,circle,line,polygon,text')) {
        drawn++;
        const b = el.getBBox();
        if (b.width > 0 || b.height > 0) inked++;
      }
    }
    out[f.id] = {width: r.width, height: r.height, drawn, inked, missing: f.classList.contains('missing')};
  }
  const pre = document.createElement('pre');
  pre.id = 'tk-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

/// Lay `page` out in headless Chromium (scratch files under `dir`) and return, per figure id,
/// its rendered `width`, `height`, `inked` element count and `missing` flag.
pub fn rendered_figures(page: &str, dir: &Path) -> serde_json::Value {
    let check = dir.join("check.html");
    std::fs::write(
        &check,
        page.replace("</body>", &format!("{FIGURE_CHECK_SCRIPT}</body>")),
    )
    .unwrap();
    let out = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg(format!("file://{}", check.display()))
        .output()
        .expect("start chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"tk-check\">").unwrap_or_else(|| {
        panic!(
            "chromium did not run the check: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let body = &dom[start + "<pre id=\"tk-check\">".len()..];
    let body = &body[..body.find("</pre>").unwrap()];
    serde_json::from_str(&body.replace("&quot;", "\"").replace("&amp;", "&")).unwrap()
}

/// ONNX Runtime's JSON for `onnx` run on `batches` (each a [`batch_json`]), through
/// `tools/onnx_logits.py`: `outputs`, `output_shapes`, `logits` (one entry per batch). The
/// batches are written to `batches.json` in `scratch`.
pub fn onnx_runtime(
    onnx: &Path,
    batches: &[serde_json::Value],
    scratch: &Path,
) -> serde_json::Value {
    let file = scratch.join("batches.json");
    std::fs::write(&file, serde_json::to_string(batches).unwrap()).unwrap();
    let o = Command::new("python3")
        .arg(root().join("tools/onnx_logits.py"))
        .arg(onnx)
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "onnxruntime on {} (scripts/test-deps.sh installs it): {}",
        onnx.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}
