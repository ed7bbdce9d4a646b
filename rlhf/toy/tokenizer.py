"""The CLIP tokenizer of the toy pipeline, built offline from the BPE vocabulary that open_clip ships.

The result is byte-for-byte the tokenizer of SD 1.5 and open_clip (same ids), so a prompt means the same
tokens to the toy pipeline, the toy CLIP and the real models.
"""
from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
EOS_ID = 49407  # the last of the 49,408 ids; BOS is the one before it


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (as in open_clip's SimpleTokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer(max_length: int) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` with open_clip's 49,408-token vocabulary, padding prompts to ``max_length``."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
        Path(tmp, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(
            tmp, bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS, model_max_length=max_length
        )
