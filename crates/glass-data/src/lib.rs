//! Glass data layer: sources, tokenizer, mixing, and training-order chunk files.
