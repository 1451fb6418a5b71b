"""staging.publish: a folder built aside lands as the target, or yields to another process's finished one."""
import pytest

from mlret_plugin.staging import publish, staging_path


def _built(target, text):
    tmp = staging_path(target)
    tmp.mkdir()
    (tmp / "meta.json").write_text(text)
    return tmp


def finished(folder):
    return (folder / "meta.json").is_file()


def test_a_built_folder_lands_as_the_target(tmp_path):
    target = tmp_path / "index"
    tmp = _built(target, "ours")
    assert publish(tmp, target, finished, "index") is True
    assert (target / "meta.json").read_text() == "ours" and not tmp.exists()


def test_another_processes_finished_target_is_kept_and_ours_removed(tmp_path):
    target = tmp_path / "index"
    publish(_built(target, "theirs"), target, finished, "index")
    ours = _built(target, "ours")
    assert publish(ours, target, finished, "index") is False
    assert (target / "meta.json").read_text() == "theirs" and not ours.exists()


def test_an_unfinished_target_in_the_way_is_an_error(tmp_path):
    target = tmp_path / "index"
    (target / "partial").mkdir(parents=True)  # not finished: no meta.json
    ours = _built(target, "ours")
    with pytest.raises(OSError):
        publish(ours, target, finished, "index")
    assert ours.exists()  # left for the caller's cleanup
