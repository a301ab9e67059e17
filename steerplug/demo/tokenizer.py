"""Word-level tokenizer of the demo model (one token per grammar word)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from steerplug.demo.lexicon import vocabulary

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
"""Special tokens, with ids 0-3 in this order."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """WordLevel tokenizer over the grammar vocabulary that prepends ``<bos>`` to every text.

    Decoding joins words with single spaces, so ``analyze(tok.decode(ids, skip_special_tokens=True))``
    parses generations directly.
    """
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False, padding_side="left", model_max_length=256)


def save_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Build the tokenizer and save it (``tokenizer.json`` + config) into ``out_dir``."""
    tok = build_tokenizer()
    tok.save_pretrained(str(out_dir))
    return tok
