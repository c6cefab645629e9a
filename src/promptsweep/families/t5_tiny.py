"""A tiny random T5 text encoder and a tokenizer for it, built offline.

SD 3.5 and FLUX.1 read a text through T5 (``T5EncoderModel`` with a
Unigram ``T5TokenizerFast``, which transformers 5 saves under its one class
name ``T5Tokenizer``). The hub's tiny test T5 cannot be downloaded
here, so the tokenizer is built from a vocabulary of single characters:
every printable ASCII character is one piece (SentencePiece's ``▁`` marks a
word start), anything else is ``<unk>``. Different texts thus map to
different tokens without a downloaded vocabulary.
"""

from __future__ import annotations

from transformers import T5Config, T5EncoderModel, T5TokenizerFast

# T5's layout: <pad> = 0, </s> = 1, <unk> = 2, then the pieces.
SPECIAL_PIECES = ["<pad>", "</s>", "<unk>"]


def character_vocabulary() -> list[tuple[str, float]]:
    """(piece, log-probability) of the Unigram model: the specials, the
    word-start marker alone and before each character, and each character."""
    characters = [chr(code) for code in range(0x21, 0x7F)]
    pieces = ["▁"] + ["▁" + character for character in characters] + characters
    return [(piece, 0.0) for piece in SPECIAL_PIECES] + [(piece, -1.0) for piece in pieces]


def build_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast(vocab=character_vocabulary(), extra_ids=0)


def build_text_encoder(width: int) -> T5EncoderModel:
    """A 2-layer T5 encoder of hidden size ``width`` over the character vocabulary."""
    config = T5Config(
        vocab_size=len(character_vocabulary()),
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)
