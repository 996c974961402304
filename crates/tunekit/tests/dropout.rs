//! Dropout is active only in training: the same input gives identical outputs in inference
//! mode and different ones under autodiff (training) with different seeds.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use tunekit::batch::collate;
use tunekit::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
use tunekit::model::{ModelDir, Pooling};
use tunekit::tokenize::TextTokenizer;

#[test]
fn dropout_only_in_training() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = ModelDir::open(
        root.join("assets/models/all-MiniLM-L6-v2")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let spec = ClassifierSpec {
        head: Default::default(),
        num_labels: 2,
        pooling: Pooling::Mean,
        dropout: DropoutOverride {
            hidden: Some(0.3),
            attention: Some(0.3),
        },
        seed: 1,
        require_head: false,
    };
    let ad = Device::flex().autodiff();
    let (model, _) = load_classifier(&dir.weights_path(), &dir.config, &spec, &ad).unwrap();
    let tok = TextTokenizer::from_file(&dir.tokenizer_path(), 32).unwrap();
    let tokens = tok
        .encode_batch(&["a fine film", "not good at all"], None)
        .unwrap();
    let refs: Vec<_> = tokens.iter().collect();
    let logits = |m: &tunekit::model::SequenceClassifier, device: &Device, seed: u64| {
        device.seed(seed);
        let batch = collate(&refs, tok.pad_id(), device);
        tunekit::model::weights::to_vec(m.forward(&batch)).unwrap()
    };
    let train_a = logits(&model, &ad, 1);
    let train_b = logits(&model, &ad, 2);
    let train_a2 = logits(&model, &ad, 1);
    assert_ne!(train_a, train_b, "dropout must be active in training");
    assert_eq!(
        train_a, train_a2,
        "the same seed must give the same dropout masks"
    );

    let valid = model.valid();
    let plain = Device::flex();
    let eval_a = logits(&valid, &plain, 1);
    let eval_b = logits(&valid, &plain, 2);
    assert_eq!(eval_a, eval_b, "no dropout at inference");
    assert_ne!(eval_a, train_a);
}
