"""Train the demo model from scratch on the grammar corpus.

    python -m steerplug.demo.train --out DIR --seed 0

writes ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
tokenizer files to ``DIR``.  Everything (corpus, data order, init) derives from
``--seed``; the shipped assets were produced with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from steerplug.demo.grammar import generate_corpus
from steerplug.demo.tokenizer import save_tokenizer


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of a training run."""

    seed: int = 0
    n_docs: int = 76_800
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 60
    weight_decay: float = 0.01
    threads: int = 1


def model_config(vocab_size: int, pad: int, bos: int, eos: int) -> LlamaConfig:
    """Architecture of the demo model: 4 layers, hidden 64, 4 heads, MLP 256, tied embeddings."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=True, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)


def encode_corpus(tok: object, n_docs: int, seed: int) -> list[list[int]]:
    """Token ids ``<bos> sentence ... <eos>`` of every corpus document."""
    docs = generate_corpus(n_docs, seed)
    ids = tok([d.text for d in docs])["input_ids"]  # type: ignore[operator]
    eos = tok.eos_token_id  # type: ignore[attr-defined]
    return [[*row, eos] for row in ids]


def make_batch(rows: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Right-pad ``rows``; padding is masked out of attention and loss."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def batch_order(lengths: list[int], batch_size: int, seed: int, bucket: int = 32) -> list[list[int]]:
    """Deterministic batches of row indices with similar lengths (less padding), in shuffled order.

    Rows are shuffled, cut into chunks of ``bucket`` batches, sorted by length inside each chunk,
    split into batches, and the batches shuffled again.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    batches: list[list[int]] = []
    for lo in range(0, len(order), batch_size * bucket):
        chunk = sorted(order[lo: lo + batch_size * bucket], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup then cosine decay to 10% of the peak learning rate."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train(out: str | Path, settings: TrainSettings, log_every: int = 100) -> LlamaForCausalLM:
    """Train with AdamW + cosine schedule and save model and tokenizer to ``out``."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer(out)
    rows = encode_corpus(tok, settings.n_docs, settings.seed)
    model = LlamaForCausalLM(model_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, settings))
    batches = batch_order([len(r) for r in rows], settings.batch_size, settings.seed)
    model.train()
    start, running = time.time(), 0.0
    for step in range(settings.steps):
        batch = make_batch([rows[i] for i in batches[step % len(batches)]], tok.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += loss.item()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{settings.steps} loss {running / log_every:.4f} "
                  f"lr {sched.get_last_lr()[0]:.2e} {time.time() - start:.0f}s", flush=True)
            running = 0.0
    model.eval()
    _save(model, out, settings, time.time() - start)
    return model


def _save(model: LlamaForCausalLM, out: Path, settings: TrainSettings, seconds: float) -> None:
    cfg = model.config
    model.generation_config = GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=40)
    model.save_pretrained(str(out), safe_serialization=True)
    info = {**asdict(settings), "train_seconds": round(seconds, 1), "torch": torch.__version__}
    (out / "training_args.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved to {out} after {seconds:.0f}s of training", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point (``python -m steerplug.demo.train --out DIR --seed 0``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    defaults = TrainSettings()
    for name in ("seed", "n_docs", "steps", "batch_size", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    train(out, TrainSettings(**{**asdict(defaults), **args}))


if __name__ == "__main__":
    main()
