"""quant.fileio: the output-path check every writing command runs before its work."""

from __future__ import annotations

import pytest

from quant.fileio import OutputPathError, check_output_path


def test_writable_file_path_is_checked_without_a_trace(tmp_path):
    target = tmp_path / "new" / "deeper" / "report.html"
    assert check_output_path(target, "--out") == target
    assert not (tmp_path / "new").exists()  # a missing parent is checked, not created
    assert list(tmp_path.iterdir()) == []


def test_directory_where_a_file_goes(tmp_path):
    with pytest.raises(OutputPathError, match=rf"--out '{tmp_path}' is a directory; give a file path"):
        check_output_path(tmp_path, "--out")


def test_file_where_a_directory_goes(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputPathError, match=r"--out '.*/f' is a file, not a directory"):
        check_output_path(f, "--out", kind="dir")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_parent_is_a_file(tmp_path, kind):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputPathError, match=r"'.*/f/sub/out' is not writable: '.*/f' is a file, not a directory"):
        check_output_path(f / "sub" / "out", "--out", kind=kind)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_read_only_folder(readonly_dir, kind):
    with pytest.raises(OutputPathError, match=r"'.*/ro/a/out' is not writable: (the file system is read-only|"
                                              r"permission denied) \(in '.*/ro'\); pick another"):
        check_output_path(readonly_dir / "a" / "out", "--out", kind=kind, hint="pick another")
    assert list(readonly_dir.iterdir()) == []


def test_directory_is_created_for_dir_kind(tmp_path):
    d = check_output_path(tmp_path / "a" / "b", "--out", kind="dir")
    assert d.is_dir() and list(d.iterdir()) == []
