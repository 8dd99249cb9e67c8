//! Hugging Face interop: `glass export hf` writes a checkpoint as a transformers
//! `LlamaForCausalLM` folder (config, safetensors, tokenizer, model card), and `glass
//! import hf` turns such a folder — safetensors or PyTorch `.bin` pickles, single or
//! sharded, f32/f16/bf16 — into a Glass run whose checkpoint 0 is its weights.
//!
//! Nothing is approximated silently: a Glass knob that transformers' LLaMA cannot
//! express is folded into the weights where that is exact, or refused; a PyTorch pickle
//! is read by a safe machine that can only rebuild tensors. See `docs/hf-interop.md`.

pub mod card;
pub mod error;
pub mod export;
pub mod families;
pub mod gguf;
pub mod hf_config;
pub mod import;
pub mod pickle;
pub mod torch_bin;
pub mod weights;

pub use error::{HfError, Result};
pub use export::{export, parse_size, ExportDtype, ExportOptions, ExportReport};
pub use import::{
    import, import_converted, import_with, load_folder, ConvertedFrom, ImportOptions, ImportReport,
};
