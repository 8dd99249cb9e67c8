//! `glass`: fully transparent LLM pretraining.

fn main() {}
