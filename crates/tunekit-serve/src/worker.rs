//! The model worker: one OS thread that owns the model and runs dynamic batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntGauge};
use tokio::sync::oneshot;
use tunekit::predictor::{Encoded, Prediction, Predictor};
use tunekit::tokenize::Tokens;

use crate::ServeConfig;

/// What a request wants computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The task's prediction ([`Prediction`]: class probabilities, label sets, values,
    /// entities).
    Predict,
    /// Sentence embeddings (pooled as the model's configuration says; see `tunekit::embed`).
    Embed,
}

/// One request's inputs and where to send the result (one [`Prediction`] per input, in
/// order; [`Prediction::Embedding`] for /embed).
pub struct Job {
    /// Predict or embed.
    pub kind: Kind,
    /// Encoded inputs.
    pub inputs: Vec<Encoded>,
    /// Result channel.
    pub reply: oneshot::Sender<Result<Vec<Prediction>, String>>,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the caller answers 503.
    Full,
    /// The worker is gone.
    Closed,
}

/// Handle to the worker's bounded queue.
pub struct Worker {
    tx: SyncSender<Job>,
    queue_depth: IntGauge,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Start the worker thread with `predictor`.
    pub fn spawn(
        predictor: Predictor,
        pooling: tunekit::embed::EmbedPooling,
        config: &ServeConfig,
        queue_depth: IntGauge,
        batch_size: Histogram,
    ) -> Self {
        let (tx, rx) = sync_channel::<Job>(config.queue_capacity);
        let limits = Limits {
            max_inputs: config.max_batch_size.max(1),
            max_tokens: config.max_batch_tokens.max(1),
            max_wait: config.max_wait,
        };
        let depth = queue_depth.clone();
        let handle = std::thread::Builder::new()
            .name("tunekit-model".into())
            .spawn(move || run(predictor, pooling, rx, limits, depth, batch_size))
            .map_err(|e| tracing::error!("cannot start the model worker: {e}"))
            .ok();
        Worker {
            tx,
            queue_depth,
            handle,
        }
    }

    /// Whether the worker thread is running.
    pub fn is_alive(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Queue a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.queue_depth.inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }
}

/// Inputs per forward pass inside a dynamic batch. The batch is sorted by length and cut
/// into passes of this size: on CPU, one pass over a whole batch pads every input to the
/// longest one and gains little from the larger matrices (see docs/benchmarks.md).
const SUB_BATCH: usize = 4;

#[derive(Clone, Copy)]
struct Limits {
    max_inputs: usize,
    max_tokens: usize,
    max_wait: Duration,
}

fn job_tokens(job: &Job) -> usize {
    job.inputs.iter().map(|t| t.tokens.ids.len()).sum()
}

fn run(
    predictor: Predictor,
    pooling: tunekit::embed::EmbedPooling,
    rx: Receiver<Job>,
    limits: Limits,
    depth: IntGauge,
    batch_size: Histogram,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => {
                    depth.dec();
                    j
                }
                Err(_) => return, // all senders dropped: server shut down
            },
        };
        let deadline = Instant::now() + limits.max_wait;
        let (mut inputs, mut tokens) = (first.inputs.len(), job_tokens(&first));
        let mut jobs = vec![first];
        while inputs < limits.max_inputs && tokens < limits.max_tokens {
            // Take what is already queued at once. Wait up to `max_wait` for more only when
            // requests are arriving concurrently: a lone request never pays the wait.
            let next = match rx.try_recv() {
                Ok(job) => Ok(job),
                Err(_) if jobs.len() > 1 => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                Err(_) => Err(RecvTimeoutError::Timeout),
            };
            match next {
                Ok(job) => {
                    depth.dec();
                    let (n, t) = (job.inputs.len(), job_tokens(&job));
                    if inputs + n > limits.max_inputs || tokens + t > limits.max_tokens {
                        carry = Some(job);
                        break;
                    }
                    inputs += n;
                    tokens += t;
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Requests whose caller gave up (timed out) are not computed.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let inputs: usize = jobs.iter().map(|j| j.inputs.len()).sum();
        batch_size.observe(inputs as f64);
        let (predict, embeds): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.kind == Kind::Predict);
        for (kind, group) in [(Kind::Predict, predict), (Kind::Embed, embeds)] {
            if group.is_empty() {
                continue;
            }
            let all: Vec<Encoded> = group
                .iter()
                .flat_map(|j| j.inputs.iter().cloned())
                .collect();
            let result = match kind {
                Kind::Predict => predictor.predict_encoded(&all, SUB_BATCH),
                Kind::Embed => {
                    let tokens: Vec<Tokens> = all.into_iter().map(|e| e.tokens).collect();
                    predictor
                        .embed_tokens(&tokens, pooling, SUB_BATCH)
                        .map(|v| v.into_iter().map(Prediction::Embedding).collect())
                }
            };
            match result {
                Ok(outputs) => {
                    let mut it = outputs.into_iter();
                    for job in group {
                        let part: Vec<Prediction> = it.by_ref().take(job.inputs.len()).collect();
                        let _ = job.reply.send(Ok(part));
                    }
                }
                Err(e) => {
                    for job in group {
                        let _ = job.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}
