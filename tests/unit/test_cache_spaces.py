"""One embedded vector index per embedding build: another build's vectors are dropped at start, not compared."""

from __future__ import annotations

from pathlib import Path

from actors.cache.actor import drop_other_spaces
from weights.minilm import BUILD_VERSION, VECTOR_SPACE


def test_the_space_names_the_build() -> None:
    assert VECTOR_SPACE == f"minilm_l6_v{BUILD_VERSION}"


def test_the_indexes_of_other_builds_are_dropped_and_this_builds_is_kept(tmp_path: Path) -> None:
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):  # build 1: directly in the folder
        (tmp_path / name).write_bytes(b"x")
    for space in ("minilm_l6_v2", "minilm_l6_v3"):
        (tmp_path / space).mkdir()
        (tmp_path / space / "index.sqlite3").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("an operator's file")

    dropped = drop_other_spaces(tmp_path, "minilm_l6_v3")

    assert dropped == ["minilm_l6_v1", "minilm_l6_v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm_l6_v3", "notes.txt"]
    assert (tmp_path / "minilm_l6_v3" / "index.sqlite3").read_bytes() == b"x"
    assert drop_other_spaces(tmp_path, "minilm_l6_v3") == []  # nothing left to drop


def test_a_missing_folder_drops_nothing(tmp_path: Path) -> None:
    assert drop_other_spaces(tmp_path / "absent", VECTOR_SPACE) == []
