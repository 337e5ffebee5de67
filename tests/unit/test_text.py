"""Text from an attempt is made storable in a PostgreSQL text column, and nothing else
changes."""

from __future__ import annotations

from hourglass.text import REPLACEMENT, storable


def test_nul_bytes_and_lone_surrogates_become_replacement_marks_one_for_one() -> None:
    assert storable("a\x00b\x00\x00") == f"a{REPLACEMENT}b{REPLACEMENT}{REPLACEMENT}"
    assert storable("name-\udcff-\ud800") == f"name-{REPLACEMENT}-{REPLACEMENT}"
    assert storable("a\x00b").encode("utf-8") == "a\ufffdb".encode()


def test_other_text_is_unchanged() -> None:
    text = "tab\tnewline\n\x01\x7f é 𝄞 \ufffd"
    assert storable(text) == text
    assert storable("") == ""
