"""The charges a ledger applied, in memory that does not grow with traffic (pure: no I/O, no clock).

    book = ChargeBook(keep=KEEP_KEYS)
    book.add(key, nanos, tier) -> bool     False: that key was charged already (idempotency)
    key in book                            was it charged?
    book.count, book.nanos, book.by_tier   running sums over every charge ever applied
    book.digest()                          equal digests, equal charges (order does not matter)

Idempotency needs a key only while its result can come again: a redelivery (within ``ack_wait`` x
``max_deliver``), a re-delivery of unacknowledged results after a restart (at most the consumer's
``max_ack_pending``), a second publish of the same Msg-Id. So the book remembers the last ``keep``
keys (1,048,576 by default: hours of traffic at 100 req/s, ~12 minutes at 1,500 req/s, far more than
a redelivery window) as 64-bit hashes in one sorted numpy array (chunks of 16,384 merged in as they
fill, the oldest chunk dropped: ~10 ms each 16,384 charges on this machine): 9 bytes a key (the
hash and its chunk's generation mod 256: at most 255 chunks are kept). A merge writes into a second
array of the same size, so both are allocated, and written once, at the first merge (the first 16,384
charges; a ledger that never takes that many, such as the empty one a snapshot's replaces at start,
never allocates them): ~20 MB with the defaults, the same from then to the millionth charge (an array
grown per merge kept the process's memory growing with traffic long after the keys stopped: the
allocator held on to the freed copies). Two keys share a hash with probability ~ keep^2 / 2^65 (3e-8
when full): a charge lost to that is under-counted, never charged twice.

The sums (count, nano-dollars, per tier, the digest: a sum of per-charge sha256 values mod 2^256, so
it is independent of order and can be kept as a running figure) cover every charge since the ledger
began; a snapshot carries them, so a rebuilt ledger has the same ones as the live ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

CHUNK = 16_384  # a smaller open set (Python ints) is less memory; merging one costs ~10 ms
KEEP_KEYS = 64 * CHUNK
MAX_CHUNKS = 255  # kept chunks (+ the one being merged in) tell their generations apart in a uint8
_MOD = 1 << 256


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def charge_value(key: str, nanos: int) -> int:
    """One charge's share of the digest."""
    return int.from_bytes(hashlib.sha256(f"{key}={nanos}\n".encode()).digest(), "big")


def digest_of(value: int) -> str:
    return f"{value % _MOD:064x}"


def charges_digest(items: Iterable[tuple[str, int]]) -> str:
    """The digest of a set of charges ``(key, nanos)``, as :meth:`ChargeBook.digest` gives it."""
    return digest_of(sum(charge_value(k, n) for k, n in items))


class ChargeBook:
    def __init__(self, keep: int = KEEP_KEYS, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self.keep_chunks = max(1, keep // chunk)
        if self.keep_chunks > MAX_CHUNKS:
            raise ValueError(f"a chargebook keeps at most {MAX_CHUNKS} chunks: keep {keep} / chunk {chunk}")
        # the closed chunks merged into one sorted array (one probe per look-up), each hash tagged with
        # its chunk's generation (mod 256: one byte) so the oldest chunk can be dropped in one pass;
        # two of each, a merge reads one and writes the other: made at the first merge (``_allocate``)
        self.capacity = (self.keep_chunks + 1) * chunk
        self._hashes = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64))
        self._gens = (np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8))
        self._mask = np.empty(0, dtype=np.bool_)
        self._cur = 0  # which of the two holds the merged keys
        self._n = 0
        self.first_gen = 0
        self.next_gen = 0
        self.open: set[int] = set()  # the newest keys, not yet a chunk
        self.count = 0
        self.nanos = 0
        self.by_tier: dict[str, int] = {}
        self.acc = 0  # the digest's running sum, mod 2^256

    def __contains__(self, key: str) -> bool:
        return self._seen(key_hash(key))

    def _seen(self, h: int) -> bool:
        if h in self.open:
            return True
        probe = np.uint64(h)
        i = int(np.searchsorted(self.merged, probe))
        return i < len(self.merged) and bool(self.merged[i] == probe)

    @property
    def merged(self) -> np.ndarray:
        """The closed chunks' hashes, sorted."""
        return self._hashes[self._cur][: self._n]

    @property
    def gens(self) -> np.ndarray:
        """Each merged hash's chunk generation, mod 256."""
        return self._gens[self._cur][: self._n]

    def _allocate(self) -> None:
        """The arrays at their full size, every page written now: resident from here on, whatever comes."""
        self._hashes = (np.empty(self.capacity, dtype=np.uint64), np.empty(self.capacity, dtype=np.uint64))
        self._gens = (np.empty(self.capacity, dtype=np.uint8), np.empty(self.capacity, dtype=np.uint8))
        self._mask = np.empty(self.capacity, dtype=np.bool_)
        for array in (*self._hashes, *self._gens, self._mask):
            array.fill(0)

    def _close(self, hashes: np.ndarray) -> None:
        """Merge a chunk of sorted hashes in (a few ms per chunk); drop the oldest past ``keep``."""
        capacity = self.capacity
        if not len(self._mask):
            self._allocate()
        if len(hashes) > capacity:
            raise ValueError(f"a chunk of {len(hashes)} keys exceeds the book's {capacity}")
        while self.next_gen - self.first_gen >= self.keep_chunks or self._n + len(hashes) > capacity:
            self._drop_oldest()
        n, m, src = self._n, len(hashes), self._cur
        at = np.searchsorted(self._hashes[src][:n], hashes)
        at += np.arange(m)  # where each new hash lands once the ones before it are in
        keys, gens, old = self._hashes[1 - src][: n + m], self._gens[1 - src][: n + m], self._mask[: n + m]
        old.fill(True)
        old[at] = False
        keys[at], gens[at] = hashes, np.uint8(self.next_gen % 256)
        keys[old], gens[old] = self._hashes[src][:n], self._gens[src][:n]
        self._cur, self._n = 1 - src, n + m
        self.next_gen += 1

    def _drop_oldest(self) -> None:
        """The oldest chunk's hashes out, the others copied over to the other pair of arrays."""
        src, n, oldest = self._cur, self._n, np.uint8(self.first_gen % 256)
        keys, gens = self._hashes[src], self._gens[src]
        to_keys, to_gens = self._hashes[1 - src], self._gens[1 - src]
        k = 0
        for start in range(0, n, self.chunk):  # a chunk at a time: no temporary array of the book's size
            end = min(n, start + self.chunk)
            kept = gens[start:end] != oldest
            taken = int(np.count_nonzero(kept))
            to_keys[k : k + taken] = keys[start:end][kept]
            to_gens[k : k + taken] = gens[start:end][kept]
            k += taken
        self._cur, self._n = 1 - src, k
        self.first_gen += 1

    def add(self, key: str, nanos: int, tier: str | None) -> bool:
        h = key_hash(key)
        if self._seen(h):
            return False
        self.open.add(h)
        if len(self.open) >= self.chunk:
            self._close(self._sorted_open())
            self.open = set()
        self.count += 1
        self.nanos += nanos
        name = tier or "-"
        self.by_tier[name] = self.by_tier.get(name, 0) + nanos
        self.acc = (self.acc + charge_value(key, nanos)) % _MOD
        return True

    def remembered(self) -> int:
        """Keys held for idempotency (at most ``keep`` + ``chunk``)."""
        return len(self.open) + len(self.merged)

    def digest(self) -> str:
        return digest_of(self.acc)

    # --- a snapshot's view -----------------------------------------------------------------------
    def _sorted_open(self) -> np.ndarray:
        return np.sort(np.fromiter(self.open, dtype=np.uint64, count=len(self.open)))

    def export_keys(self) -> list[bytes]:
        """The remembered hashes, one sorted chunk each, oldest first (the open set last)."""
        out = [self.merged[self.gens == np.uint8(g % 256)].tobytes() for g in range(self.first_gen, self.next_gen)]
        out.append(self._sorted_open().tobytes())
        return out

    def restore_keys(self, chunks: list[bytes]) -> None:
        *full, last = chunks or [b""]
        for raw in full:
            self._close(np.frombuffer(raw, dtype=np.uint64))
        self.open = {int(h) for h in np.frombuffer(last, dtype=np.uint64)}
