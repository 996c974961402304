//! The exported weights carry exactly the tensor names and shapes `transformers`'
//! `BertForSequenceClassification` expects (list made by `tools/hf_tensor_names.py`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use tunekit::model::weights::{ClassifierSpec, DropoutOverride, load_classifier, save_classifier};
use tunekit::model::{ModelDir, Pooling};

#[test]
fn hf_export_names_match_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("crates/tunekit/tests/fixtures/hf_bert_seqcls_minilm.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(fixture["tensors"].clone()).unwrap();

    let dir = ModelDir::open(
        root.join("assets/models/all-MiniLM-L6-v2")
            .to_str()
            .unwrap(),
    )
    .expect("assets missing: run scripts/fetch-assets.sh");
    let spec = ClassifierSpec {
        head: Default::default(),
        num_labels: 2,
        pooling: Pooling::Cls,
        dropout: DropoutOverride::default(),
        seed: 1,
        require_head: false,
    };
    let device = Device::flex();
    let (model, report) =
        load_classifier(&dir.weights_path(), &dir.config, &spec, &device).unwrap();
    assert!(report.classifier_initialized && !report.pooler_initialized);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.safetensors");
    save_classifier(&model, &out).unwrap();

    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let got: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    assert_eq!(got, want);

    // Round trip: the exported file loads back (with its head) to identical weights.
    let (again, report) = load_classifier(
        &out,
        &dir.config,
        &ClassifierSpec {
            require_head: true,
            ..spec
        },
        &device,
    )
    .unwrap();
    assert!(!report.classifier_initialized && report.unused_tensors.is_empty());
    let a = tunekit::model::weights::classifier_tensors(&model).unwrap();
    let b = tunekit::model::weights::classifier_tensors(&again).unwrap();
    assert!(a == b, "export → load must be lossless");
}
