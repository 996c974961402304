//! The OpenAPI 3.1 description served at `/openapi.json`.

use serde_json::{Value, json};

/// The API description.
pub fn spec() -> Value {
    let inputs = json!({
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]
    });
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err =
        |d: &str| json!({"description": d, "content": {"application/json": {"schema": error}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tunekit serve", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Inference for fine-tuned tunekit models of every task (TEI-compatible /predict and /embed)."},
        "paths": {
            "/predict": {"post": {
                "summary": "The model's task prediction for one text or a list of texts (class probabilities, label sets, numbers or entities)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"],
                    "properties": {"inputs": inputs, "truncate": {"type": "boolean"}, "raw_scores": {"type": "boolean"}}}}}},
                "responses": {
                    "200": {"description": "Per text, by the model's task (/info `task`): classification [{label, score}] sorted by score; multilabel {labels: [chosen], scores: [{label, score}]}; regression a number; token classification [{entity_group, score, word, start, end}] (character offsets). A single text gets its answer, a list one answer per text. Header x-truncated-inputs counts truncated inputs. An embedding model answers 400 (use /embed).",
                            "content": {"application/json": {"schema": {}}}},
                    "400": err("Malformed JSON"), "413": err("Too many inputs, body too large, or input too long without truncation"),
                    "422": err("Empty input"), "503": err("Queue full (Retry-After set)"), "504": err("Timed out")}}},
            "/embed": {"post": {
                "summary": "Sentence embeddings, pooled and normalised as the model's sentence-transformers config says (as `tunekit embed`)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["inputs"],
                    "properties": {"inputs": inputs, "truncate": {"type": "boolean"}, "normalize": {"type": "boolean", "description": "default: the model's Normalize module (unit vectors for models without sentence-transformers files)"}}}}}},
                "responses": {
                    "200": {"description": "One vector per input", "content": {"application/json": {"schema": {
                        "type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}},
                    "400": err("Malformed JSON"), "413": err("Too large"), "422": err("Empty input"),
                    "503": err("Queue full"), "504": err("Timed out")}}},
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process is up"}}}},
            "/ready": {"get": {"summary": "Readiness: the model is loaded and its worker runs",
                               "responses": {"200": {"description": "Ready"}, "503": err("Not ready")}}},
            "/info": {"get": {"summary": "Model, task, labels, limits, version and current drift",
                              "responses": {"200": {"description": "Info", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error", "error_type"],
            "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}}}
    })
}
