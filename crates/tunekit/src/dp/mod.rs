//! Differentially private fine-tuning (DP-SGD). [`accountant`] holds the privacy accountants.

pub mod accountant;
