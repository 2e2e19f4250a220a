"""The file-system calls the file:// store builds on, on this machine's real file system."""

from __future__ import annotations

import errno
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


@pytest.mark.parametrize(
    "release, expected",
    [("6.1.0-18-amd64", True), ("5.17.0", True), ("5.16.20-generic", False), ("5.15.0-91-generic", False),
     ("4.18.0-513.el8.x86_64", False), ("6.18.44-fc-v669", True), ("10.0", True), ("garbage", False)],
)
def test_kernel_at_least(release: str, expected: bool) -> None:
    assert fscalls.kernel_at_least(release, (5, 17)) is expected


# statfs(2)'s magic numbers of the file-system types /proc names
_MAGIC = {"ext2": 0xEF53, "ext3": 0xEF53, "ext4": 0xEF53, "xfs": 0x58465342, "btrfs": 0x9123683E,
          "tmpfs": 0x01021994, "overlay": 0x794C7630, "nfs": 0x6969, "nfs4": 0x6969}


def _mount_type(path: str) -> str:
    """The file-system type /proc/self/mountinfo gives the mount holding ``path`` (the longest mount point above it)."""
    best, kind = "", ""
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def test_file_system_magic_is_the_type_proc_names(tmp_path) -> None:
    kind = _mount_type(os.path.realpath(tmp_path))
    magic = fscalls.file_system_magic(str(tmp_path))
    assert magic is not None
    if kind in _MAGIC:
        assert magic == _MAGIC[kind]
    else:  # a type this table does not know: at least not one syncfs is trusted on
        assert magic not in fscalls.SYNCFS_FILE_SYSTEMS


def test_syncfs_is_trusted_on_a_journaling_file_system_of_a_recent_kernel_only(tmp_path, monkeypatch) -> None:
    path, device = str(tmp_path), os.stat(tmp_path).st_dev
    here = _mount_type(os.path.realpath(tmp_path)) in ("ext2", "ext3", "ext4", "xfs", "btrfs") and fscalls.kernel_at_least(
        os.uname().release, (5, 17)
    )
    monkeypatch.setattr(fscalls, "_trusted", {})
    assert fscalls.syncfs_trusted(device, path) is here
    monkeypatch.setattr(fscalls, "_trusted", {})
    monkeypatch.setattr(fscalls, "file_system_magic", lambda path: 0xEF53)
    assert fscalls.syncfs_trusted(device, path) is fscalls.kernel_at_least(os.uname().release, (5, 17))
    monkeypatch.setattr(fscalls, "_trusted", {})
    monkeypatch.setattr(fscalls.os, "uname", lambda: os.uname_result(("Linux", "h", "5.15.0-91-generic", "", "x86_64")))
    assert fscalls.syncfs_trusted(device, path) is False  # errors of the file system's own not reported yet
    monkeypatch.setattr(fscalls, "_trusted", {})
    monkeypatch.setattr(fscalls.os, "uname", lambda: os.uname_result(("Linux", "h", "6.1.0", "", "x86_64")))
    monkeypatch.setattr(fscalls, "file_system_magic", lambda path: 0x6969)  # NFS
    assert fscalls.syncfs_trusted(device, path) is False


def test_sync_file_system_syncs_and_reports_errors(tmp_path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"data")
        fscalls.sync_file_system(fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        fscalls.sync_file_system(fd)  # closed now
    assert raised.value.errno == errno.EBADF
