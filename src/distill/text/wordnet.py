"""WordNet glosses and their supersenses, read from WordNet's own ``data.<pos>`` files.

WordNet 3.x (Miller 1995; Fellbaum 1998) ships one ``data.<pos>`` file per part of speech
(``noun``, ``verb``, ``adj``, ``adv``). Every synset is one line::

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss

(``wndb(5WN)``). ``lex_filenum`` (two decimal digits, 0–44) names the *lexicographer file* the
synset was written in — its supersense (``noun.animal``, ``verb.motion``, …; ``lexnames(5WN)``,
:data:`LEXNAMES`). The gloss after ``" | "`` is a definition, often followed by ``; "example"``
sentences. Lines starting with two spaces are the licence header and are skipped.

Nothing is downloaded: the files are read from a folder — the ``root`` argument, else
``$DISTILL_WORDNET``, else ``/usr/share/wordnet`` where Debian's ``wordnet-base`` package puts
them. A missing folder or file is a :class:`~distill.errors.DataError` that says how to get them.
This module never prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import DataError

#: The 45 lexicographer files (supersenses), by ``lex_filenum`` (``lexnames(5WN)``).
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
NUM_LEXNAMES = len(LEXNAMES)

#: The parts of speech, as named in the file names ``data.<pos>``.
PARTS_OF_SPEECH: tuple[str, ...] = ("noun", "verb", "adj", "adv")

#: Where Debian's ``wordnet-base`` package installs the database.
DEFAULT_DIRECTORY = Path("/usr/share/wordnet")
#: The environment variable that names the folder when the caller does not.
ENVIRONMENT_VARIABLE = "DISTILL_WORDNET"

HOW_TO_GET = (
    "install it with 'apt-get install wordnet-base' (Debian/Ubuntu), or pass the folder holding "
    "WordNet's data.noun, data.verb, data.adj and data.adv files as the path (data.path in a recipe)"
)


@dataclass(frozen=True)
class WordNetGlosses:
    """Every gloss of the parts of speech read, in file order (``noun``, ``verb``, ``adj``,
    ``adv``, then synset offset within a file).

    ``texts[i]``: the gloss (definition and examples, as in the file); ``labels[i]``: its
    supersense, the ``lex_filenum`` ``0..44`` (int64); ``parts[i]``: its part of speech;
    ``words[i]``: the synset's first word (``_`` for spaces, as in the file); ``class_names``:
    :data:`LEXNAMES`, so ``class_names[labels[i]]`` is ``noun.animal`` etc.; ``root``: the folder.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    parts: tuple[str, ...]
    words: tuple[str, ...]
    root: Path
    class_names: tuple[str, ...] = LEXNAMES

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self) -> np.ndarray:
        """Glosses per supersense, ``(45,)``."""
        return np.bincount(self.labels, minlength=NUM_LEXNAMES)


def wordnet_directory(root: Path | str | None = None) -> tuple[Path, str]:
    """The folder to read, and where that choice came from (for messages): ``root`` if given,
    else ``$DISTILL_WORDNET`` if set, else :data:`DEFAULT_DIRECTORY`."""
    if root is not None:
        return Path(root), "the given path"
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return Path(from_environment), f"${ENVIRONMENT_VARIABLE}"
    return DEFAULT_DIRECTORY, "the default location"


def wordnet_files(directory: Path, parts: Sequence[str], origin: str = "the given path") -> dict[str, Path]:
    """``{pos: data.<pos> file}`` for ``parts`` in ``directory``; a missing folder or file is a
    :class:`DataError` saying what was looked for where and how to get it."""
    unknown = [part for part in parts if part not in PARTS_OF_SPEECH]
    if unknown:
        raise DataError(
            f"wordnet: unknown part of speech {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(PARTS_OF_SPEECH)}"
        )
    if not directory.exists():
        raise DataError(f"wordnet: folder {directory} ({origin}) does not exist: {HOW_TO_GET}")
    if not directory.is_dir():
        raise DataError(f"wordnet: {directory} ({origin}) is not a folder: {HOW_TO_GET}")
    files = {part: directory / f"data.{part}" for part in parts}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(f"wordnet: {', '.join(missing)} not found in {directory} ({origin}): {HOW_TO_GET}")
    return files


def parse_data_line(line: str, source: str = "data file") -> tuple[int, str, str] | None:
    """``(lex_filenum, first word, gloss)`` of one synset line of a ``data.<pos>`` file; ``None``
    for a licence-header line (two leading spaces) or a blank line. A malformed line is a
    :class:`DataError` naming ``source``."""
    if not line.strip() or line.startswith("  "):
        return None
    head, bar, gloss = line.partition(" | ")
    fields = head.split()
    if not bar or len(fields) < 5:
        raise DataError(
            f"{source}: not a WordNet synset line "
            f"(expected '<offset> <lex_filenum> … | gloss'): {line[:80]!r}"
        )
    lexfile = fields[1]
    if len(lexfile) != 2 or not lexfile.isdigit() or int(lexfile) >= NUM_LEXNAMES:
        raise DataError(f"{source}: lex_filenum {lexfile!r} is not a 2-digit number in 00..44: {line[:80]!r}")
    return int(lexfile), fields[4], gloss.strip()


def read_data_file(path: Path) -> list[tuple[int, str, str]]:
    """Every synset ``(lex_filenum, first word, gloss)`` of one ``data.<pos>`` file, in order."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            rows = [parse_data_line(line, f"{path}:{number}") for number, line in enumerate(handle, 1)]
    except OSError as error:
        raise DataError(f"wordnet: cannot read {path}: {error.strerror or error}") from error
    synsets = [row for row in rows if row is not None]
    if not synsets:
        raise DataError(f"wordnet: {path} holds no synset lines")
    return synsets


def load_glosses(root: Path | str | None = None, parts: Iterable[str] = PARTS_OF_SPEECH) -> WordNetGlosses:
    """Read the glosses and supersenses of ``parts`` (default: all four) from the WordNet folder
    ``root`` (default: ``$DISTILL_WORDNET``, else ``/usr/share/wordnet``)."""
    parts = tuple(dict.fromkeys(parts))
    if not parts:
        raise DataError(f"wordnet: no part of speech chosen; expected some of {', '.join(PARTS_OF_SPEECH)}")
    directory, origin = wordnet_directory(root)
    texts: list[str] = []
    labels: list[int] = []
    kinds: list[str] = []
    words: list[str] = []
    for part, path in wordnet_files(directory, parts, origin).items():
        for lexfile, word, gloss in read_data_file(path):
            texts.append(gloss)
            labels.append(lexfile)
            kinds.append(part)
            words.append(word)
    return WordNetGlosses(
        tuple(texts), np.asarray(labels, dtype=np.int64), tuple(kinds), tuple(words), directory
    )
