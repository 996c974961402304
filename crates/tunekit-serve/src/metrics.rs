//! Prometheus metrics and the sliding window behind the drift signal.

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use serde::Serialize;
use tunekit::drift::{LENGTH_BUCKETS, ReferenceStats, kl, length_bucket, psi, shares};

/// Drift of live traffic from the training-time reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    /// Predictions in the window.
    pub window: usize,
    /// Share of each label among the window's predictions.
    pub prediction_distribution: Vec<f64>,
    /// The reference's share of each label.
    pub reference_distribution: Vec<f64>,
    /// PSI of the prediction distribution.
    pub prediction_psi: f64,
    /// KL(window ‖ reference) of the prediction distribution, nats.
    pub prediction_kl: f64,
    /// PSI of the input token-length distribution.
    pub length_psi: f64,
    /// Mean input length in tokens in the window.
    pub mean_length: f64,
    /// Mean input length of the reference.
    pub reference_mean_length: f64,
}

struct Window {
    capacity: usize,
    items: VecDeque<(usize, usize, usize)>, // (label, length bucket, length)
    label_counts: Vec<u64>,
    length_counts: Vec<u64>,
    length_sum: usize,
}

/// All metrics of the server.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status code.
    pub requests: IntCounterVec,
    /// Request latency by route.
    pub latency: HistogramVec,
    /// Inputs per model batch.
    pub batch_size: Histogram,
    /// Jobs waiting for the worker.
    pub queue_depth: IntGauge,
    /// Predictions by label.
    pub predictions: IntCounterVec,
    drift_gauge: GaugeVec,
    labels: Vec<String>,
    reference: Option<ReferenceStats>,
    window: Mutex<Window>,
}

impl Metrics {
    /// Register everything.
    pub fn new(
        labels: &[String],
        reference: Option<ReferenceStats>,
        window: usize,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tunekit_requests_total",
                "HTTP requests by route and status code",
            ),
            &["route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("tunekit_request_duration_seconds", "Request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["route"],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("tunekit_batch_size", "Inputs per model batch")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let queue_depth = IntGauge::new(
            "tunekit_queue_depth",
            "Requests waiting for the model worker",
        )?;
        let predictions = IntCounterVec::new(
            Opts::new("tunekit_predictions_total", "Predicted labels"),
            &["label"],
        )?;
        let drift_gauge = GaugeVec::new(
            Opts::new(
                "tunekit_drift",
                "Divergence of live traffic from the training-time reference",
            ),
            &["signal", "measure"],
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(queue_depth.clone()),
            Box::new(predictions.clone()),
            Box::new(drift_gauge.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            batch_size,
            queue_depth,
            predictions,
            drift_gauge,
            labels: labels.to_vec(),
            reference,
            window: Mutex::new(Window {
                capacity: window.max(1),
                items: VecDeque::new(),
                label_counts: vec![0; labels.len()],
                length_counts: vec![0; LENGTH_BUCKETS.len() + 1],
                length_sum: 0,
            }),
        })
    }

    /// Record predictions (label ids and input lengths) and update the drift gauges.
    pub fn observe_predictions(&self, labels: &[usize], lengths: &[usize]) {
        for &l in labels {
            if let Some(name) = self.labels.get(l) {
                self.predictions.with_label_values(&[name]).inc();
            }
        }
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        for (&l, &len) in labels.iter().zip(lengths) {
            let b = length_bucket(len);
            w.items.push_back((l, b, len));
            if let Some(c) = w.label_counts.get_mut(l) {
                *c += 1;
            }
            w.length_counts[b] += 1;
            w.length_sum += len;
            if w.items.len() > w.capacity
                && let Some((ol, ob, olen)) = w.items.pop_front()
            {
                if let Some(c) = w.label_counts.get_mut(ol) {
                    *c -= 1;
                }
                w.length_counts[ob] -= 1;
                w.length_sum -= olen;
            }
        }
        if let Some(d) = self.drift_of(&w) {
            self.drift_gauge
                .with_label_values(&["prediction", "psi"])
                .set(d.prediction_psi);
            self.drift_gauge
                .with_label_values(&["prediction", "kl"])
                .set(d.prediction_kl);
            self.drift_gauge
                .with_label_values(&["length", "psi"])
                .set(d.length_psi);
        }
    }

    fn drift_of(&self, w: &Window) -> Option<Drift> {
        let r = self.reference.as_ref()?;
        if w.items.is_empty() || r.prediction_distribution.len() != w.label_counts.len() {
            return None;
        }
        let p = shares(&w.label_counts);
        let lengths = shares(&w.length_counts);
        Some(Drift {
            window: w.items.len(),
            prediction_psi: psi(&p, &r.prediction_distribution),
            prediction_kl: kl(&p, &r.prediction_distribution),
            length_psi: psi(&lengths, &r.length_distribution),
            mean_length: w.length_sum as f64 / w.items.len() as f64,
            reference_mean_length: r.mean_length,
            prediction_distribution: p,
            reference_distribution: r.prediction_distribution.clone(),
        })
    }

    /// Current drift (None without a reference or before any prediction).
    pub fn drift(&self) -> Option<Drift> {
        let w = self.window.lock().ok()?;
        self.drift_of(&w)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
