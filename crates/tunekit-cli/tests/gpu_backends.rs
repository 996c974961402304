//! The GPU backends against the CPU, on a tiny BERT: one training step's loss and every
//! gradient, then a short `train` → `eval` → `predict` → `serve` round whose numbers must
//! equal the CPU run's within stated tolerances.
//!
//! Built only with a GPU feature: CI runs it with `--features vulkan` on lavapipe (Mesa's
//! Vulkan driver on the CPU, no GPU needed); `scripts/gpu-check.sh` runs it with
//! `--features cuda` on an NVIDIA GPU. `TUNEKIT_TEST_DEVICE` picks the device (default: the
//! first GPU feature built in, cuda before vulkan before wgpu).
//!
//! Tolerances: both sides compute in f32, in a different order (GPU reductions are tiled),
//! so values agree to float rounding, not bit for bit. One step: loss within 1e-5 relative,
//! each gradient tensor within 1e-3 of its largest magnitude (a few ulps of the big entries;
//! the smallest entries carry cancellation). A short run: the train loss curve within 1e-3,
//! validation accuracy within one example, predicted probabilities within 1e-3 — a longer
//! run drifts further apart as rounding compounds through Adam's updates.
#![cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use common::*;
use tunekit::device::DeviceKind;

/// The GPU under test.
fn gpu() -> DeviceKind {
    if let Ok(name) = std::env::var("TUNEKIT_TEST_DEVICE") {
        return name.parse().expect("TUNEKIT_TEST_DEVICE");
    }
    if cfg!(feature = "cuda") {
        DeviceKind::Cuda(0)
    } else if cfg!(feature = "vulkan") {
        DeviceKind::Vulkan
    } else {
        DeviceKind::Wgpu
    }
}

/// Every parameter's gradient, in visiting order (the same on both devices).
struct Grads<'a> {
    grads: &'a GradientsParams,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.out
                .push(tunekit::model::weights::to_vec(g).expect("gradient values"));
        }
    }
}

/// Loss and gradients of one step of the tiny classifier on `kind` (dropout off), its
/// linear-layer products in `precision`.
fn one_step(
    model_dir: &Path,
    kind: DeviceKind,
    precision: tunekit::model::Precision,
) -> (f32, Vec<Vec<f32>>) {
    use tunekit::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
    let ad = tunekit::device::device(kind).unwrap().autodiff();
    let dir = tunekit::model::ModelDir::open(model_dir.to_str().unwrap()).unwrap();
    let spec = ClassifierSpec {
        head: Default::default(),
        num_labels: 2,
        pooling: tunekit::model::Pooling::Mean,
        dropout: DropoutOverride {
            hidden: Some(0.0),
            attention: Some(0.0),
        },
        seed: 5,
        require_head: false,
    };
    let mut model = load_classifier(&dir.weights_path(), &dir.config, &spec, &ad)
        .unwrap()
        .0;
    model.encoder.set_precision(precision);
    // Four sequences of different lengths: padding and the attention mask take part.
    let toks: Vec<tunekit::tokenize::Tokens> = [9usize, 17, 5, 30]
        .iter()
        .enumerate()
        .map(|(b, &len)| {
            let mut ids = vec![101u32];
            ids.extend((1..len - 1).map(|i| 1000 + ((b * 7919 + i * 104_729) % 29_000) as u32));
            ids.push(102);
            tunekit::tokenize::Tokens {
                type_ids: vec![0; ids.len()],
                ids,
                truncated: false,
            }
        })
        .collect();
    let refs: Vec<&tunekit::tokenize::Tokens> = toks.iter().collect();
    let batch = tunekit::batch::collate(&refs, 0, &ad);
    let labels = tunekit::batch::label_tensor(&[0, 1, 1, 0], &ad);
    let loss = tunekit::train::cross_entropy_sum(model.forward(&batch), labels).div_scalar(4.0);
    let value = tunekit::model::weights::to_vec(loss.clone().detach()).unwrap()[0];
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut visitor = Grads {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    (value, visitor.out)
}

#[test]
fn one_training_step_matches_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny"));
    let f32 = tunekit::model::Precision::F32;
    let (cpu_loss, cpu_grads) = one_step(&model, DeviceKind::Cpu, f32);
    let (gpu_loss, gpu_grads) = one_step(&model, gpu(), f32);
    assert!(
        ((gpu_loss - cpu_loss) / cpu_loss).abs() < 1e-5,
        "loss: {} {gpu_loss} vs cpu {cpu_loss}",
        gpu()
    );
    assert_grads_close(&gpu_grads, &cpu_grads, 1e-3);
}

/// `train.precision = "bf16"` on the GPU: bf16 operands of every linear-layer product, f32
/// master weights (`fused::bf16_linear`), against the CPU's bf16 route (the same operand
/// rounding; the GPU also rounds each product's output to bf16, as PyTorch's autocast does).
/// Tolerances follow bf16's 8-bit mantissa: loss within 1e-2 relative, each gradient within
/// 5e-2 of its largest magnitude. A device without bf16 must refuse it by name.
#[test]
fn bf16_products_on_the_gpu_match_the_cpus_bf16_or_are_refused() {
    let device = tunekit::device::device(gpu()).unwrap();
    let bf16 = tunekit::model::Precision::Bf16;
    if !device.supports_dtype(burn::tensor::DType::BF16) {
        let e = tunekit::model::bf16::for_device(bf16, &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bf16"), "{e}");
        return;
    }
    tunekit::model::bf16::for_device(bf16, &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny"));
    let (cpu_loss, cpu_grads) = one_step(&model, DeviceKind::Cpu, bf16);
    let (gpu_loss, gpu_grads) = one_step(&model, gpu(), bf16);
    let (gpu_f32_loss, _) = one_step(&model, gpu(), tunekit::model::Precision::F32);
    assert!(
        ((gpu_loss - cpu_loss) / cpu_loss).abs() < 1e-2,
        "bf16 loss: {} {gpu_loss} vs cpu {cpu_loss}",
        gpu()
    );
    // bf16 really ran: the GPU's own f32 step differs by more than f32 rounding (> 1e-5
    // relative; bf16 operands move the loss by ~1e-3 here).
    assert!(
        ((gpu_loss - gpu_f32_loss) / gpu_f32_loss).abs() > 1e-5,
        "bf16 {gpu_loss} vs f32 {gpu_f32_loss} on {}: bf16 products did not run",
        gpu()
    );
    assert_grads_close(&gpu_grads, &cpu_grads, 5e-2);
}

fn assert_grads_close(gpu_grads: &[Vec<f32>], cpu_grads: &[Vec<f32>], tolerance: f32) {
    assert_eq!(gpu_grads.len(), cpu_grads.len(), "gradient count");
    assert!(cpu_grads.len() > 30, "every parameter has a gradient");
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    // A floor for gradients that are zero in exact arithmetic (the attention key bias: softmax
    // ignores a constant added to every score), where both sides hold only rounding noise:
    // measured on an H200, 2.5e-10 on CUDA against 1e-12 on the CPU.
    let floor = cpu_grads.iter().map(|c| largest(c)).fold(0f32, f32::max) * 1e-5;
    for (i, (g, c)) in gpu_grads.iter().zip(cpu_grads).enumerate() {
        assert_eq!(g.len(), c.len(), "gradient {i} size");
        let scale = largest(c).max(floor);
        let worst = g.iter().zip(c).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= tolerance * scale,
            "gradient {i}: max difference {worst} vs largest magnitude {scale}"
        );
    }
}

/// `tunekit --device DEVICE train` of the tiny config (2 epochs): its run directory.
fn train_on(dir: &Path, kind: DeviceKind) -> std::path::PathBuf {
    let model = tiny_model(&dir.join("tiny"));
    let cfg = tiny_config(dir, &model, "epochs = 2\nmax_grad_norm = 1.0");
    let run = dir.join("run");
    let device = kind.to_string();
    let o = tunekit(&[
        "--device",
        &device,
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "train on {device}: {}", stderr(&o));
    run
}

fn losses(run: &Path) -> Vec<f64> {
    read_jsonl(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|l| l["train_loss"].as_f64())
        .collect()
}

#[test]
fn train_eval_predict_and_serve_match_the_cpu() {
    let (cpu_dir, gpu_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cpu_run = train_on(cpu_dir.path(), DeviceKind::Cpu);
    let gpu_run = train_on(gpu_dir.path(), gpu());
    let device = gpu().to_string();

    let (c, g) = (losses(&cpu_run), losses(&gpu_run));
    assert_eq!(c.len(), 2, "one train loss per epoch: {c:?}");
    assert_eq!(c.len(), g.len());
    for (a, b) in c.iter().zip(&g) {
        assert!((a - b).abs() < 1e-3, "train loss {device} {b} vs cpu {a}");
    }
    // Validation: 48 examples, so one example is 1/48 of accuracy.
    let (cm, gm) = (
        json(&cpu_run.join("metrics.json")),
        json(&gpu_run.join("metrics.json")),
    );
    let acc = |m: &serde_json::Value| m["validation"]["accuracy"].as_f64().unwrap();
    assert!(
        (acc(&cm) - acc(&gm)).abs() <= 1.0 / 48.0 + 1e-9,
        "validation accuracy {device} {} vs cpu {}",
        acc(&gm),
        acc(&cm)
    );

    // The GPU-trained model, evaluated and used for prediction on the GPU and on the CPU.
    let model = gpu_run.join("model");
    let test = cpu_dir.path().join("test.tsv");
    let eval = |kind: &str| {
        let out = gpu_dir.path().join(format!("eval-{kind}.json"));
        let o = tunekit(&[
            "--device",
            kind,
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "eval on {kind}: {}", stderr(&o));
        json(&out)
    };
    let (ec, eg) = (eval("cpu"), eval(&device));
    // The same weights on both: only an example within float rounding of the decision
    // boundary could flip.
    let (xa, ya) = (
        ec["metrics"]["accuracy"].as_f64().unwrap(),
        eg["metrics"]["accuracy"].as_f64().unwrap(),
    );
    assert!(
        (xa - ya).abs() <= 1.0 / 48.0 + 1e-9,
        "eval accuracy: cpu {xa} vs {device} {ya}"
    );
    let predict = |kind: &str| {
        let out = gpu_dir.path().join(format!("p-{kind}.jsonl"));
        let o = tunekit(&[
            "--device",
            kind,
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            test.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "predict on {kind}: {}", stderr(&o));
        read_jsonl(&out)
    };
    let (pc, pg) = (predict("cpu"), predict(&device));
    assert_eq!(pc.len(), 48);
    assert_eq!(pc.len(), pg.len());
    for (a, b) in pc.iter().zip(&pg) {
        for label in ["negative", "positive"] {
            let (x, y) = (
                a["probabilities"][label].as_f64().unwrap(),
                b["probabilities"][label].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-3, "{label}: cpu {x} vs {device} {y}");
        }
    }

    // `tunekit serve --device DEVICE` answers with the scores `predict` gives on the CPU.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    /// Kills the server however the test ends (a panic must not leave it holding the GPU).
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        Command::new(tunekit_bin())
            .args(["--device", &device, "serve", "--model"])
            .arg(&model)
            .args(["--addr", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{addr}");
    let start = Instant::now();
    while ureq::get(&format!("{base}/ready")).call().is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("serve on {device} exited: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "serve not ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = "a wonderful , moving film";
    let body = ureq::post(&format!("{base}/predict"))
        .header("content-type", "application/json")
        .send(serde_json::json!({ "inputs": text }).to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    drop(server);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    let input = gpu_dir.path().join("one.tsv");
    std::fs::write(&input, format!("text\n{text}\n")).unwrap();
    let rows = predict_rows(&model, &input, &gpu_dir.path().join("one.jsonl"));
    for entry in served.as_array().unwrap() {
        let label = entry["label"].as_str().unwrap();
        let (a, b) = (
            entry["score"].as_f64().unwrap(),
            rows[0]["probabilities"][label].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-3,
            "{label}: served on {device} {a} vs cpu predict {b}"
        );
    }
}
