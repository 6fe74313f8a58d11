import pytest

from tarn.core.lake import Lake
from tarn.core.readers import count_records
from tarn.datasets import seed_adult
from tarn.errors import LakeError


def test_seed_reproduces_the_official_partition_in_raw_form(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    names = seed_adult(lake, train_batches=4, test_batches=2)
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
    seed_adult(lake, 1, 1)
    with pytest.raises(LakeError, match="not empty"):
        seed_adult(lake, 1, 1)


def test_add_prefixes_sequence_and_batches_are_immutable(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    seed_adult(lake, 1, 1)
    f = tmp_path / "new.csv"
    f.write_text("age\n1\n")
    assert lake.add([f], "march") == "0003-march"
    assert [b.name for b in lake.batches()][-1] == "0003-march"
    f.write_text("age\n2\n")  # other bytes: only the name clashes
    with pytest.raises(LakeError, match="already exists"):
        lake.add([f], "0003-march")


def test_the_same_file_added_twice_is_refused(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    f = tmp_path / "new.csv"
    f.write_text("age\n1\n")
    lake.add([f], "one")
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(f.read_bytes())
    with pytest.raises(LakeError, match=r"already holds these exact bytes \(0001-one/new.csv\)"):
        lake.add([copy], "two")
    assert [b.name for b in lake.batches()] == ["0001-one"]  # nothing written
    copy.write_text("age\n3\n")  # same size, other bytes: accepted
    assert lake.add([copy], "two") == "0002-two"


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
    seed_adult(lake, 1, 1)
    assert [b.name for b in lake.batches()] == ["0001-adult-train", "0002-adult-test"]
    lake.fs.rm("/tarn-test-lake", recursive=True)


# ---------------------------------------------- a lake that refuses what it cannot read
def _schema():
    from tarn.config import params_from_dict
    from tests.support.project import repo_params_dict

    return params_from_dict(repo_params_dict()).schema


def _check(f):
    from tarn.core.ingest import check_header

    check_header(f, _schema())


@pytest.mark.parametrize(("name", "content", "missing"), [
    ("notes.txt", b"Remember to call the bank about the March figures.\n", "'age'"),
    ("header_only.csv", b"name, city, zip\n", "'age'"),
    ("no_age.csv", b"workclass, fnlwgt\nPrivate, 1\n", "'age'"),
])
def test_add_checks_the_header_against_the_contract_rows_or_not(tmp_path, name, content,
                                                                 missing):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(LakeError) as e:
        Lake(str(tmp_path / "lake")).add([f], "x", check_file=_check)
    assert name in e.value.message and "missing column" in e.value.message
    assert missing in e.value.message
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").iterdir())


def test_add_accepts_a_byte_order_mark_and_alias_headers(tmp_path):
    from tarn.datasets import ADULT_COLUMNS

    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbf" + ", ".join(ADULT_COLUMNS).encode() + b"\n")
    assert Lake(str(tmp_path / "lake")).add([f], "bom", check_file=_check) == "0001-bom"


def test_add_refuses_unsupported_formats_listing_the_supported_ones(tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_bytes(b"PK..")
    with pytest.raises(LakeError) as e:
        Lake(str(tmp_path / "lake")).add([f], "x")
    assert "data.xlsx" in e.value.message and ".csv" in e.value.message
    assert ".parquet" in e.value.message


def test_add_refuses_two_files_of_the_same_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "part.csv").write_text("age\n1\n")
    with pytest.raises(LakeError, match="two files named 'part.csv'"):
        Lake(str(tmp_path / "lake")).add([tmp_path / "a" / "part.csv",
                                          tmp_path / "b" / "part.csv"], "x")
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").iterdir())


def test_a_crash_while_adding_leaves_no_partial_batch(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    files = []
    for i in range(2):
        files.append(tmp_path / f"f{i}.csv")
        files[-1].write_text("age\n1\n")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lake.fs, "mv", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.add(files, "x")
    assert list((tmp_path / "lake").iterdir()) == []  # no batch, no temporary folder
    monkeypatch.undo()
    assert lake.add(files, "x") == "0001-x"
    assert sorted(p.name for p in (tmp_path / "lake" / "0001-x").iterdir()) == ["f0.csv",
                                                                                 "f1.csv"]


def test_batch_numbers_keep_their_order_past_9999(tmp_path):
    for name in ("0002-b", "9999-c", "10000-d", "0001-a"):
        (tmp_path / "lake" / name).mkdir(parents=True)
        (tmp_path / "lake" / name / "a.csv").write_text("x\n1\n")
    lake = Lake(str(tmp_path / "lake"))
    assert [b.name for b in lake.batches()] == ["0001-a", "0002-b", "9999-c", "10000-d"]
    f = tmp_path / "n.csv"
    f.write_text("x\n2\n")
    assert lake.add([f], "next") == "10001-next"
    assert [b.name for b in lake.batches()][-1] == "10001-next"


def test_retire_keeps_the_files_records_why_and_readers_skip_it(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    seed_adult(lake, 2, 1)
    rec = lake.retire("0002-adult-train", "wrong export (March)")
    assert rec["reason"] == "wrong export (March)" and rec["batch"] == "0002-adult-train"
    assert (tmp_path / "lake" / "0002-adult-train" / "adult.csv").exists()  # append-only
    assert [b.name for b in lake.batches()] == ["0001-adult-train", "0003-adult-test"]
    assert [b.name for b in lake.batches(retired=True)][1] == "0002-adult-train"
    assert list(lake.retired()) == ["0002-adult-train"]
    with pytest.raises(LakeError, match="already retired"):
        lake.retire("0002-adult-train", "again")
    with pytest.raises(LakeError, match="no batch 'nope'"):
        lake.retire("nope", "x")
    with pytest.raises(LakeError, match="needs a reason"):
        lake.retire("0001-adult-train", " ")
    f = tmp_path / "n.csv"
    f.write_text("x\n1\n")
    assert lake.add([f], "new") == "0004-new"  # a retired number is not reused


@pytest.mark.parametrize(("existing", "name", "expected"), [
    ([], "2015", "0001-2015"),
    ([], "2016-test", "0001-2016-test"),  # a year is not a sequence number
    (["0001-2015", "0002-2016-test"], "2017", "0003-2017"),  # not 2017-2017
    (["0001-2015", "0002-2016-test"], "2017-q1", "0003-2017-q1"),
    (["0001-a", "0002-b"], "0003-c", "0003-c"),  # already numbered: kept
    (["0001-a", "0002-b"], "0007-c", "0007-c"),  # zero-padded: a sequence number
    (["9999-a"], "10000-b", "10000-b"),  # the next one, past 9999
])
def test_a_leading_year_is_part_of_the_name_not_a_sequence_number(tmp_path, existing, name,
                                                                   expected):
    for b in existing:
        (tmp_path / "lake" / b).mkdir(parents=True)
        (tmp_path / "lake" / b / "a.csv").write_text(f"x\n{b}\n")
    lake = Lake(str(tmp_path / "lake"))
    f = tmp_path / "n.csv"
    f.write_text("x\n1\n")
    assert lake.add([f], name) == expected
    assert [b.name for b in lake.batches()][-1] == expected
