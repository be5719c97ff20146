"""Text out of token pieces: stop sequences across pieces, held-back prefixes, UTF-8 split over tokens."""

from __future__ import annotations

from actors.gpu_host.text import TextOutput


def feed_all(out: TextOutput, pieces: list[bytes]) -> str:
    return "".join(out.feed(p) for p in pieces) + out.flush()


def test_without_stop_sequences_text_is_released_as_it_comes() -> None:
    """No stop: every piece is released at once."""
    out = TextOutput()
    assert out.feed(b"Hello") == "Hello"
    assert out.feed(b" world") == " world"
    assert out.flush() == "" and out.text == "Hello world"


def test_stop_sequence_split_over_pieces_ends_the_text_before_it() -> None:
    """'###' arriving as '#', '##': the text ends before it and nothing of it was released."""
    out = TextOutput(["###"])
    released = [out.feed(p) for p in [b"ab", b"c#", b"#", b"#tail"]]
    assert released == ["ab", "c", "", ""]
    assert out.stopped and out.text == "abc"


def test_a_partial_match_that_does_not_complete_is_released() -> None:
    """'#' followed by other text is just text."""
    out = TextOutput(["##"])
    assert out.feed(b"a#") == "a"
    assert out.feed(b"b") == "#b"
    assert not out.stopped


def test_earliest_of_several_stop_sequences_wins() -> None:
    """Two stop strings in one piece: the text ends at the first one."""
    out = TextOutput(["END", "\n\n"])
    assert feed_all(out, [b"one\n\ntwo END"]) == "one"


def test_multibyte_character_split_over_tokens_is_decoded_whole() -> None:
    """'é' (2 bytes) split over two tokens is one character, never a replacement mark."""
    out = TextOutput()
    data = "café".encode()
    assert out.feed(data[:4]) == "caf"
    assert out.feed(data[4:]) == "é"


def test_nothing_is_released_after_stopping() -> None:
    """Pieces after the stop sequence are dropped."""
    out = TextOutput(["x"])
    out.feed(b"ax")
    assert out.feed(b"more") == "" and out.flush() == "" and out.text == "a"
