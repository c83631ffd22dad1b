"""The WordNet gloss reader (:mod:`distill.text.wordnet`) on generated files in WordNet's
``data.<pos>`` format, its errors, and one smoke test on the real database when installed."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from distill.errors import DataError
from distill.text.wordnet import LEXNAMES, load_glosses, parse_data_line
from tests.text.fixtures import SYNSETS, write_wordnet

REAL = Path("/usr/share/wordnet")


def test_reads_glosses_labels_and_words(tmp_path):
    glosses = load_glosses(write_wordnet(tmp_path / "wn"))
    assert len(glosses) == len(SYNSETS)
    order = [s for part in ("noun", "verb", "adj", "adv") for s in SYNSETS if s[0] == part]
    assert glosses.texts == tuple(gloss for *_, gloss in order)
    assert glosses.labels.tolist() == [lexfile for _, lexfile, _, _ in order]
    assert glosses.labels.dtype.kind == "i"
    assert glosses.words[0] == "dog" and glosses.parts[0] == "noun"
    assert glosses.class_names[glosses.labels[0]] == "noun.animal"
    assert glosses.class_counts()[5] == 4


def test_parts_of_speech_select_files(tmp_path):
    glosses = load_glosses(write_wordnet(tmp_path / "wn"), parts=["verb", "adv"])
    assert set(glosses.parts) == {"verb", "adv"}
    assert {LEXNAMES[label].split(".")[0] for label in glosses.labels} == {"verb", "adv"}


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_WORDNET", str(write_wordnet(tmp_path / "wn")))
    assert len(load_glosses()) == len(SYNSETS)


def test_header_and_gloss_parsing():
    assert parse_data_line("  1 licence text  \n") is None
    line = '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived; "an example"  \n'
    assert parse_data_line(line) == (3, "entity", 'that which is perceived; "an example"')


@pytest.mark.parametrize(
    "line, message",
    [
        ("00001740 03 n 01 entity 0 000\n", "not a WordNet synset line"),
        ("00001740 45 n 01 entity 0 000 | gloss\n", "lex_filenum '45'"),
        ("00001740 x3 n 01 entity 0 000 | gloss\n", "lex_filenum 'x3'"),
    ],
)
def test_malformed_lines_are_refused(line, message):
    with pytest.raises(DataError, match=message):
        parse_data_line(line, "data.noun:7")


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install wordnet-base") as error:
        load_glosses(tmp_path / "nowhere")
    assert "does not exist" in str(error.value)


def test_missing_file_is_named(tmp_path):
    folder = write_wordnet(tmp_path / "wn")
    (folder / "data.verb").unlink()
    with pytest.raises(DataError, match=r"data\.verb not found in .*apt-get install wordnet-base"):
        load_glosses(folder)
    assert len(load_glosses(folder, parts=["noun"])) == 8


def test_unknown_part_of_speech(tmp_path):
    with pytest.raises(DataError, match="unknown part of speech 'nouns'"):
        load_glosses(write_wordnet(tmp_path / "wn"), parts=["nouns"])


@pytest.mark.skipif(not (REAL / "data.noun").is_file(), reason="wordnet-base is not installed")
def test_real_wordnet_smoke():
    glosses = load_glosses(REAL)
    assert len(glosses) > 100_000
    assert glosses.class_counts().min() > 0  # every one of the 45 supersenses is used
    manual = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if manual.is_file():
        with gzip.open(manual, "rt") as handle:
            names = [line.split("\t")[1].strip() for line in handle if re.match(r"^\d\d\t", line)]
        assert tuple(names) == LEXNAMES
