//! One error type for the library. Every variant says *what* went wrong and *where* (file,
//! line, tensor, config key), because the CLI prints it verbatim to the user.

use std::path::PathBuf;

/// Errors returned by tunekit's library functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The run configuration is invalid (unknown key, wrong type, bad value).
    #[error("{0}")]
    Config(String),
    /// A model directory is missing a file or holds an unsupported or inconsistent model.
    #[error("{0}")]
    Model(String),
    /// A weight tensor is missing, mis-shaped or unreadable.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Weights {
        /// The weights file.
        file: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("{0}")]
    Tokenizer(String),
    /// Data file problems (from the readers).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Model id resolution in the local Hugging Face cache failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// Task data that is not a table (CoNLL files) or a target that does not parse (a
    /// regression value, a multi-label list); the message names the file and line.
    #[error("{0}")]
    Input(String),
    /// Labels in the data do not match the model's label map.
    #[error("{0}")]
    Labels(String),
    /// Checkpoint or resume state is missing or inconsistent.
    #[error("{0}")]
    Checkpoint(String),
    /// A tensor computation failed inside the engine.
    #[error("engine error: {0}")]
    Engine(String),
    /// The run report could not be built (a run file unreadable, a figure failed).
    #[error("report: {0}")]
    Report(String),
    /// A hyperparameter-search pruner stopped the run after an evaluation.
    #[error("pruned after evaluation {evaluation} (step {step})")]
    Pruned {
        /// Evaluations done (1-based).
        evaluation: usize,
        /// Optimiser steps done.
        step: usize,
    },
    /// A study store (search database) is unreachable, refused a statement or holds
    /// something unexpected; the message names the store (never with its password).
    #[error("{0}")]
    Storage(String),
    /// A GGUF file could not be read (corrupt, truncated, unsupported tensor type).
    #[error(transparent)]
    Gguf(#[from] crate::model::gguf::GgufError),
    /// Training was interrupted (Ctrl-C / SIGTERM) after saving a checkpoint.
    #[error("training interrupted; resume with --resume")]
    Interrupted,
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tunekit_kernels::Error> for Error {
    /// A kernel setting refused (unknown or unavailable precision): a configuration error,
    /// with the kernel's message.
    fn from(e: tunekit_kernels::Error) -> Self {
        Error::Config(e.to_string())
    }
}
