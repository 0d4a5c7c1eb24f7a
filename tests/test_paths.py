"""salax.paths: local and remote (gs://) paths, and outputs that appear whole or not at all."""

import pytest
from remote_testdata import BUCKET, fake_bucket

from salax import paths


def test_a_staged_file_appears_under_its_name_only_when_complete(tmp_path):
    target = tmp_path / "out" / "maps.mp4"
    with paths.staged(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".maps.partial-")
        assert staging.suffix == ".mp4"  # container formats follow the extension
        staging.write_bytes(b"first")
        assert not target.exists()
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["maps.mp4"]

    with pytest.raises(RuntimeError), paths.staged(target) as staging:
        staging.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["maps.mp4"]


def test_a_staged_folder_replaces_an_earlier_one(tmp_path):
    target = tmp_path / "frames"
    for names in (["001.png", "002.png"], ["001.png"]):
        with paths.staged(target) as staging:
            staging.mkdir()
            for name in names:
                (staging / name).write_bytes(name.encode())
        assert sorted(p.name for p in target.iterdir()) == names


def test_a_remote_target_is_written_locally_then_uploaded_and_renamed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fake_bucket(tmp_path / "bucket") as bucket:
        with paths.staged(f"{BUCKET}/run/maps.mp4") as staging:
            assert paths.is_local(staging) and not str(staging).startswith(str(tmp_path / "bucket"))
            staging.write_bytes(b"maps")
        with paths.staged(f"{BUCKET}/run/frames") as staging:
            staging.mkdir()
            (staging / "001.png").write_bytes(b"png")
        with pytest.raises(RuntimeError), paths.staged(f"{BUCKET}/run/broken.mp4") as staging:
            staging.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert (tmp_path / "bucket" / "run" / "maps.mp4").read_bytes() == b"maps"
    assert (tmp_path / "bucket" / "run" / "frames" / "001.png").read_bytes() == b"png"
    assert sorted(p.name for p in (tmp_path / "bucket" / "run").iterdir()) == ["frames", "maps.mp4"]
    assert not (tmp_path / "gs:").exists()
    assert all("/." in path and ".partial-" in path for path in bucket.written)
    assert [target for _, target in bucket.renamed] == [f"{BUCKET}/run/maps.mp4", f"{BUCKET}/run/frames"]
    assert not paths.is_local(paths.as_path(f"{BUCKET}/x")) and paths.is_local(paths.as_path("x"))
