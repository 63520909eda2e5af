"""Names that become paths, and removals confined to what this process made
(the shutdown clean-up once removed /run with file_prefix = "..")."""
from __future__ import annotations

import os

import pytest

from dataplane.safefs import OwnedDir, check_plain_name


@pytest.mark.parametrize("name", ["dataplane", "dp1", "router.v6", "a-b_c", "x" * 64])
def test_plain_names_pass(name):
    assert check_plain_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "-x", ".hidden", "x" * 65,
                                  "a b", "a\x00b"])
def test_names_that_reach_elsewhere_are_refused(name):
    with pytest.raises(ValueError, match="not a plain name"):
        check_plain_name(name)


def _tree(root):
    """A run directory with a file, a subdirectory, and links that point out."""
    outside = root / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    run = root / "run"
    run.mkdir()
    (run / "config").write_text("x")
    (run / "sub").mkdir()
    (run / "sub" / "fbarray").write_text("y")
    (run / "link_to_dir").symlink_to(outside)
    (run / "sub" / "link_to_file").symlink_to(outside / "precious")
    return run, outside


def test_an_owned_tree_is_removed_and_its_links_are_not_followed(tmp_path):
    run, outside = _tree(tmp_path)
    owned = OwnedDir.adopt(run, existed_before=False)
    assert owned is not None and owned.remove()
    assert not os.path.lexists(run)
    assert (outside / "precious").read_text() == "keep me"


def test_a_directory_that_existed_before_is_never_ours(tmp_path):
    run, _ = _tree(tmp_path)
    assert OwnedDir.adopt(run, existed_before=True) is None


def test_of_a_directory_that_existed_before_only_the_named_entries_go(tmp_path):
    run, outside = _tree(tmp_path)
    owned = OwnedDir.adopt(run, existed_before=True, ours_inside=("config", "link_*"))
    assert not owned.remove()
    assert sorted(os.listdir(run)) == ["sub"]
    assert (outside / "precious").read_text() == "keep me"
    (run / "sub" / "fbarray").unlink()
    (run / "sub" / "link_to_file").unlink()
    (run / "sub").rmdir()
    assert owned.remove() and not run.exists()  # nothing but ours left: the directory goes too


def test_a_link_in_place_of_the_directory_is_not_adopted(tmp_path):
    _, outside = _tree(tmp_path)
    (tmp_path / "alias").symlink_to(outside)
    assert OwnedDir.adopt(tmp_path / "alias", existed_before=False) is None


def test_a_directory_swapped_in_after_adoption_is_left_alone(tmp_path):
    run, outside = _tree(tmp_path)
    owned = OwnedDir.adopt(run, existed_before=False)
    run.rename(tmp_path / "moved")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "someone_elses").write_text("z")
    assert not owned.remove()
    assert (tmp_path / "run" / "someone_elses").exists()


def test_a_link_swapped_in_after_adoption_is_not_followed(tmp_path):
    run, outside = _tree(tmp_path)
    owned = OwnedDir.adopt(run, existed_before=False)
    run.rename(tmp_path / "moved")
    (tmp_path / "run").symlink_to(outside)
    assert not owned.remove()
    assert (outside / "precious").read_text() == "keep me"


def test_remove_not_tree_keeps_a_directory_that_is_not_empty(tmp_path):
    run, _ = _tree(tmp_path)
    owned = OwnedDir.adopt(run, existed_before=False)
    assert not owned.remove(tree=False) and (run / "config").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert OwnedDir.adopt(empty, existed_before=False).remove(tree=False)
    assert not empty.exists()
