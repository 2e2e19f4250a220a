"""The file-system calls the file:// store builds on, on this machine's real file system."""

from __future__ import annotations

import os

import pytest

from tracker.store import fscalls


def test_make_folder_names_the_parent_of_every_folder_it_made(tmp_path) -> None:
    (tmp_path / "ns").mkdir()
    target = tmp_path / "ns" / "db" / "t" / "dt=2026-01-02"
    assert fscalls.make_folder(str(target)) == [str(target.parent), str(target.parent.parent), str(tmp_path / "ns")]
    assert target.is_dir()
    assert fscalls.make_folder(str(target)) == []  # there already: nothing new to sync


def test_make_folder_refuses_a_file_in_the_way(tmp_path) -> None:
    (tmp_path / "blocker").write_bytes(b"x")
    with pytest.raises(OSError):
        fscalls.make_folder(str(tmp_path / "blocker" / "inside"))


@pytest.mark.parametrize("available", [True, False], ids=["renameat2", "without"])
def test_rename_no_replace_never_replaces(tmp_path, monkeypatch, available: bool) -> None:
    if not available:
        monkeypatch.setattr(fscalls, "_renameat2", None)
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    if not available:  # the caller links instead
        assert fscalls.rename_no_replace(str(tmp_path / "a"), str(tmp_path / "c")) is False
        return
    with pytest.raises(FileExistsError):
        fscalls.rename_no_replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == b"b"
    assert fscalls.rename_no_replace(str(tmp_path / "a"), str(tmp_path / "c")) is True
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]
