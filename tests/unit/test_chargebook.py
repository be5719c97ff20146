"""The budget_guard's charge book: a bounded memory of charge keys with exact running sums."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from policy.chargebook import ChargeBook, charges_digest


def test_the_book_remembers_at_most_keep_plus_one_chunk_of_keys_whatever_the_traffic() -> None:
    """300,000 charges into a book that keeps 40,000 keys: the sums are exact, the keys bounded."""
    book = ChargeBook(keep=40_000, chunk=10_000)
    peak = 0
    for i in range(300_000):
        assert book.add(f"req-{i}", i % 1000, "premium" if i % 2 else None)
        peak = max(peak, book.remembered())
    assert peak <= 50_000 and book.next_gen - book.first_gen == 4
    assert book.count == 300_000 and book.nanos == sum(i % 1000 for i in range(300_000))
    assert book.by_tier == {
        "premium": sum(i % 1000 for i in range(1, 300_000, 2)),
        "-": book.nanos - book.by_tier["premium"],
    }


def test_a_recent_key_is_charged_once_and_an_old_one_is_forgotten() -> None:
    book = ChargeBook(keep=20, chunk=10)
    for i in range(100):
        book.add(f"k{i}", 1, "together")
    assert all(f"k{i}" in book for i in range(80, 100))  # the last two chunks of 10 are remembered
    assert not book.add("k99", 1, "together") and not book.add("k80", 1, "together")
    assert "k79" not in book and book.count == 100 and book.nanos == 100


def test_the_digest_does_not_depend_on_order_and_survives_a_snapshot_of_the_keys() -> None:
    items = [(f"r{i}", random.Random(i).randrange(10**9)) for i in range(5000)]
    a, b = ChargeBook(keep=4000, chunk=1000), ChargeBook(keep=4000, chunk=1000)
    for key, nanos in items:
        a.add(key, nanos, "premium")
    for key, nanos in reversed(items):
        b.add(key, nanos, "premium")
    assert a.digest() == b.digest() == charges_digest(items)
    assert charges_digest(items[:-1]) != a.digest()
    restored = ChargeBook(keep=4000, chunk=1000)
    restored.restore_keys(a.export_keys())
    assert restored.remembered() == a.remembered() and all(k in restored for k, _ in items[-4000:])
    assert not restored.add(items[-1][0], items[-1][1], "premium")


def test_generations_wrap_past_256_chunks_and_the_book_still_drops_exactly_the_oldest() -> None:
    """Each remembered key costs 9 bytes (hash + one-byte generation), also after generations wrap."""
    book = ChargeBook(keep=255 * 4, chunk=4)
    for i in range(300 * 4 + 2):  # 300 chunks closed: generations 0..299 tag as 0..255, 0..43
        book.add(f"k{i}", 1, None)
    assert book.next_gen == 300 and book.remembered() == 255 * 4 + 2
    assert all(f"k{i}" in book for i in range(45 * 4, 300 * 4 + 2)) and "k179" not in book
    assert book.merged.nbytes + book.gens.nbytes == 9 * len(book.merged)
    restored = ChargeBook(keep=255 * 4, chunk=4)
    restored.restore_keys(book.export_keys())
    assert restored.remembered() == book.remembered() and "k180" in restored and "k179" not in restored
    restored.add("x0", 1, None), restored.add("x1", 1, None)  # one more chunk: the oldest one goes
    assert "k180" not in restored and "k184" in restored and "x1" in restored


def test_a_book_of_more_chunks_than_a_byte_tells_apart_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 255 chunks"):
        ChargeBook(keep=256 * 4, chunk=4)


def test_the_books_memory_is_taken_at_its_first_merge_and_does_not_grow_with_charges() -> None:
    """Its arrays are allocated (both of a merge's pairs) and written at its first merge: 150,000 charges
    later, past ``keep`` and with the oldest chunks dropped, the book holds no more memory than after the
    first chunk, and no merge or drop needed a temporary array the size of the book."""
    book = ChargeBook(keep=100_000, chunk=1_000)
    tracemalloc.start()
    try:
        for i in range(1_000):
            book.add(f"req-{i}", 1, None)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(1_000, 150_000):
            book.add(f"req-{i}", 1, None)
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert book.first_gen > 0 and book.remembered() >= 100_000  # past keep: chunks were dropped
    assert now - base < 250_000 and peak - base < 400_000  # the arrays alone are 1.9 MB
