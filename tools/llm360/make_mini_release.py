#!/usr/bin/env python3
"""Writes a miniature release in LLM360's published layout (Amber's) for the tests of
`glass import llm360`:

    OUT/data/train_000.jsonl, train_001.jsonl   one training row per line:
                                                {"token_ids": [...], "source": "..."}
    OUT/checkpoints/ckpt_000/                   tiny LlamaForCausalLM as sharded PyTorch .bin
                                                (transformers 4.x's layout, as Amber's)
    OUT/checkpoints/ckpt_001/                   the same architecture as sharded safetensors
                                                (transformers' save_pretrained), + tokenizer
    OUT/reference.json                          per checkpoint: prompt ids and transformers'
                                                logits for them (f32)

Rows are random ids with 17 tokens each, 8 rows per chunk (2 steps of 4 rows), drawn from
three sources. The tokenizer is the byte-level BPE of the glass-hf fixtures.

Usage: /work/venv/bin/python tools/llm360/make_mini_release.py crates/glass-cli/tests/fixtures/llm360-mini
"""

import json
import random
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/fixtures"))
from make_hf_fixtures import save_bin  # noqa: E402  (transformers 5 writes no .bin itself)

TOK_DIR = ROOT / "crates/glass-hf/tests/fixtures/hf/bin-sharded"
VOCAB = 300
ROW_LEN = 17
ROWS_PER_CHUNK = 8
CHUNKS = 2
SOURCES = ["arxiv", "c4", "starcoder"]
PROMPT = "When shall we three meet again"


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    rng = random.Random(360)
    for c in range(CHUNKS):
        with open(out / "data" / f"train_{c:03d}.jsonl", "w") as f:
            for _ in range(ROWS_PER_CHUNK):
                row = {"token_ids": [rng.randrange(VOCAB) for _ in range(ROW_LEN)],
                       "source": rng.choice(SOURCES)}
                f.write(json.dumps(row) + "\n")
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=0,
                      eos_token_id=1, tie_word_embeddings=False)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOK_DIR / "tokenizer.json"),
                                  bos_token="<s>", eos_token="</s>", model_max_length=64)
    ids = tok(PROMPT)["input_ids"]
    ref = {"prompt": PROMPT, "checkpoints": []}
    for c in range(CHUNKS):
        torch.manual_seed(1000 + c)
        model = LlamaForCausalLM(cfg).eval()
        d = out / "checkpoints" / f"ckpt_{c:03d}"
        if c == 0:
            d.mkdir(parents=True)
            model.config.save_pretrained(d)
            save_bin({k: v.contiguous() for k, v in model.state_dict().items()}, d, 50_000)
        else:
            model.save_pretrained(d, max_shard_size="50KB")
        for n in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(TOK_DIR / n, d / n)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        ref["checkpoints"].append({"checkpoint": c, "ids": ids, "logits": logits.tolist()})
    (out / "reference.json").write_text(json.dumps(ref))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
