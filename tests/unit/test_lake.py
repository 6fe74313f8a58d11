import pytest

from tarn.core.lake import Lake
from tarn.core.readers import count_records
from tarn.errors import LakeError


def test_seed_reproduces_the_official_partition_in_raw_form(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    names = lake.seed_adult(train_batches=4, test_batches=2)
    assert names == ["0001-adult-train", "0002-adult-train", "0003-adult-train",
                     "0004-adult-train", "0005-adult-test", "0006-adult-test"]
    batches = lake.batches()
    assert [b.name for b in batches] == names  # name order is arrival order
    rows = {b.name: sum(count_records(lake.fs, f.path) for f in b.files) for b in batches}
    assert sum(v for k, v in rows.items() if "train" in k) == 32_561
    assert sum(v for k, v in rows.items() if "test" in k) == 16_281
    train_text = (tmp_path / "lake" / "0001-adult-train" / "adult.csv").read_text()
    test_text = (tmp_path / "lake" / "0006-adult-test" / "adult.csv").read_text()
    assert ", ?, " in train_text and ">50K." not in train_text  # raw: '?' and stray spaces
    assert ">50K." in test_text and "<=50K." in test_text


def test_seed_refuses_a_non_empty_lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.seed_adult(1, 1)
    with pytest.raises(LakeError, match="not empty"):
        lake.seed_adult(1, 1)


def test_add_prefixes_sequence_and_batches_are_immutable(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.seed_adult(1, 1)
    f = tmp_path / "new.csv"
    f.write_text("age\n1\n")
    assert lake.add([f], "march") == "0003-march"
    assert [b.name for b in lake.batches()][-1] == "0003-march"
    with pytest.raises(LakeError, match="already exists"):
        lake.add([f], "0003-march")


@pytest.mark.parametrize(("name", "content", "match"), [
    ("data.xlsx", b"PK..", "unsupported file format"),
    ("empty.csv", b"", "empty file"),
])
def test_add_rejects_bad_files(tmp_path, name, content, match):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(LakeError, match=match):
        Lake(str(tmp_path / "lake")).add([f], "x")
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").iterdir())


def test_missing_lake_says_how_to_create_it(tmp_path):
    with pytest.raises(LakeError) as e:
        Lake(str(tmp_path / "nowhere")).batches()
    assert "nowhere" in e.value.message and "tarn lake seed" in e.value.hint


def test_unsupported_file_in_a_batch_is_named(tmp_path):
    (tmp_path / "lake" / "0001-b").mkdir(parents=True)
    (tmp_path / "lake" / "0001-b" / "notes.xlsx").write_bytes(b"x")
    with pytest.raises(LakeError, match="notes.xlsx"):
        Lake(str(tmp_path / "lake")).batches()


def test_hidden_and_marker_files_are_ignored(tmp_path):
    (tmp_path / "lake" / "0001-b").mkdir(parents=True)
    (tmp_path / "lake" / "0001-b" / "a.csv").write_text("x\n1\n")
    (tmp_path / "lake" / "0001-b" / "_SUCCESS").write_text("")
    (tmp_path / "lake" / ".DS_Store").write_text("")
    [b] = Lake(str(tmp_path / "lake")).batches()
    assert [f.relpath for f in b.files] == ["0001-b/a.csv"]


def test_fsspec_url_lake(tmp_path):
    """Any fsspec URL works: here the in-memory filesystem."""
    lake = Lake("memory://tarn-test-lake")
    lake.seed_adult(1, 1)
    assert [b.name for b in lake.batches()] == ["0001-adult-train", "0002-adult-test"]
    lake.fs.rm("/tarn-test-lake", recursive=True)
