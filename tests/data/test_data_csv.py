"""Tests for tfmtnas.data.csv: read_csv and load_csv_dataset."""

import gzip

import numpy as np
import pytest

from tfmtnas.data import DataError, load_csv_dataset, read_csv
from tfmtnas.errors import UserError
from tfmtnas.features import TaskSpec


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_read_csv_header_numeric_and_strings(tmp_path):
    path = _write(tmp_path, "user, price ,city\n u1 ,3.5, Paris\nu2,-1e2,Lyon \n\nu1, 7 ,Paris\n")
    cols = read_csv(path, numeric=["price"])
    assert list(cols) == ["user", "price", "city"]
    assert cols["price"].dtype == np.float64
    np.testing.assert_array_equal(cols["price"], [3.5, -100.0, 7.0])
    assert cols["user"].tolist() == ["u1", "u2", "u1"]
    assert cols["city"].tolist() == ["Paris", "Lyon", "Paris"]
    assert all(type(v) is str for v in cols["city"])
    assert cols["city"][0] is cols["city"][2]  # equal cells share one string object


def test_read_csv_no_strip_keeps_spaces(tmp_path):
    path = _write(tmp_path, "a,b\n x ,1\n")
    assert read_csv(path, strip=False)["a"].tolist() == [" x "]


def test_read_csv_gzip_and_quotes(tmp_path):
    path = _write(tmp_path, 'name,n\n"Smith, J",1\n"say ""hi""",2\n', name="q.csv.gz")
    cols = read_csv(path, numeric=["n"])
    assert cols["name"].tolist() == ["Smith, J", 'say "hi"']
    assert cols["n"].tolist() == [1.0, 2.0]


def test_read_csv_multichar_sep_and_names(tmp_path):
    path = _write(tmp_path, "1, a b, ?\n2, c, x\n")
    cols = read_csv(path, names=["n", "s", "t"], numeric=["n"], sep=", ", header=False)
    assert cols["n"].tolist() == [1.0, 2.0]
    assert cols["s"].tolist() == ["a b", "c"] and cols["t"].tolist() == ["?", "x"]


def test_read_csv_names_replace_header(tmp_path):
    path = _write(tmp_path, "A\tB\nx\t1\n")
    cols = read_csv(path, names=["a", "b"], sep="\t", numeric=["b"])
    assert cols["a"].tolist() == ["x"] and cols["b"].tolist() == [1.0]


def test_read_csv_header_only_gives_empty_columns(tmp_path):
    cols = read_csv(_write(tmp_path, "a,b\n"), numeric=["b"])
    assert len(cols["a"]) == 0 and cols["b"].dtype == np.float64


def test_wrong_field_count_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a,b,c\n1,2,3\n\n4,5\n")
    with pytest.raises(DataError) as e:
        read_csv(path)
    assert str(e.value) == f"{path}:4: expected 3 fields, got 2"


def test_wrong_field_count_multichar_sep(tmp_path):
    path = _write(tmp_path, "1, 2\n3, 4, 5\n")
    with pytest.raises(DataError, match=r"data\.csv:2: expected 2 fields, got 3"):
        read_csv(path, names=["a", "b"], sep=", ", header=False)


def test_text_in_numeric_column_names_file_line_and_column(tmp_path):
    rows = "".join(f"u{i},{i}\n" for i in range(30_000))  # the bad row is in the 2nd chunk
    path = _write(tmp_path, "user,price\n" + rows + "u,abc\n")
    with pytest.raises(DataError) as e:
        read_csv(path, numeric=["price"])
    assert str(e.value) == f"{path}:30002: field 2 (column 'price') expects a number, got 'abc'"


def test_empty_numeric_cell_is_an_error_unless_allowed(tmp_path):
    path = _write(tmp_path, "a,y\n1,\n2,1\n")
    with pytest.raises(DataError, match=r"data\.csv:2: field 2 \(column 'y'\) expects a "
                                          r"number, got ''"):
        read_csv(path, numeric=["a", "y"])
    cols = read_csv(path, numeric=["a", "y"], allow_missing=["y"])
    assert np.isnan(cols["y"][0]) and cols["y"][1] == 1.0


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv: does not exist"):
        read_csv(path)


def test_unknown_numeric_column(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"no column\(s\) \['z'\]; columns are \['a', 'b'\]"):
        read_csv(path, numeric=["z"])


def test_repeated_header_names(tmp_path):
    with pytest.raises(DataError, match="repeated column names"):
        read_csv(_write(tmp_path, "a,a\n1,2\n"))


def test_header_false_needs_names(tmp_path):
    with pytest.raises(ValueError, match="Give names"):
        read_csv(_write(tmp_path, "1,2\n"), header=False)


# ---------------------------------------------------------------- load_csv_dataset


def _log(tmp_path, n=100, name="log.csv"):
    lines = ["item,city,price,click,watch"]
    for i in range(n):
        click = "" if i % 10 == 3 else str(i % 2)
        lines.append(f"it{i % 7},c{i % 3},{i * 1.5},{click},{i / 10}")
    return _write(tmp_path, "\n".join(lines) + "\n", name=name)


def test_load_csv_dataset_single_file_split(tmp_path):
    path = _log(tmp_path)
    data = load_csv_dataset(path, label_columns={"click": "binary", "watch": "regression"},
                            numeric=["price"], log_numeric=["price"], seed=3)
    assert data.name == "csv"
    assert (len(data.train), len(data.validation), len(data.test)) == (80, 10, 10)
    assert [(t.name, t.kind) for t in data.tasks] == [("click", "binary"),
                                                      ("watch", "regression")]
    # categorical=None -> every non-label, non-numeric column.
    assert [f.name for f in data.spec.categorical] == ["item", "city"]
    assert [f.name for f in data.spec.numeric] == ["price"] and data.spec.numeric[0].log
    assert set(data.train.features) == {"item", "city", "price"}
    for split in data.splits().values():
        assert split.labels["click"].dtype == np.float32
    # Every row lands in exactly one split; empty click cells are NaN.
    prices = np.concatenate([s.features["price"] for s in data.splits().values()])
    np.testing.assert_array_equal(np.sort(prices), np.arange(100) * 1.5)
    clicks = np.concatenate([s.labels["click"] for s in data.splits().values()])
    assert np.isnan(clicks).sum() == 10
    # The spec's numeric statistics come from train only.
    train_log = np.log1p(data.train.features["price"])
    assert data.spec.numeric[0].mean == pytest.approx(train_log.mean())


def test_load_csv_dataset_seed_controls_split(tmp_path):
    path = _log(tmp_path)
    kw = dict(label_columns={"click": "binary"}, numeric=["price"])
    a = load_csv_dataset(path, seed=1, **kw).test.features["price"]
    b = load_csv_dataset(path, seed=1, **kw).test.features["price"]
    c = load_csv_dataset(path, seed=2, **kw).test.features["price"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_load_csv_dataset_with_test_file(tmp_path):
    train = _log(tmp_path, n=50)
    test = _write(tmp_path, "item,city,price,click,watch\nnew_item,c0,1,1,0.5\n", "test.csv")
    data = load_csv_dataset(train, test, label_columns={"click": "binary"},
                            categorical=["item"], numeric=["price"], validation_fraction=0.2)
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 10, 1)
    assert data.test.features["item"].tolist() == ["new_item"]
    assert "new_item" not in data.spec.categorical[0].vocabulary
    assert set(data.train.features) == {"item", "price"}


def test_absent_label_column_names_it_and_lists_columns(tmp_path):
    path = _log(tmp_path)
    with pytest.raises(DataError) as e:
        load_csv_dataset(path, label_columns={"purchase": "binary"})
    msg = str(e.value)
    assert "no label column(s) ['purchase']" in msg
    assert "['item', 'city', 'price', 'click', 'watch']" in msg


def test_absent_feature_column(tmp_path):
    with pytest.raises(DataError, match=r"no numeric column\(s\) \['cost'\]"):
        load_csv_dataset(_log(tmp_path), label_columns={"click": "binary"}, numeric=["cost"])


def test_binary_label_must_be_zero_or_one(tmp_path):
    path = _write(tmp_path, "a,y\nx,1\nx,2\n")
    with pytest.raises(DataError, match=r"data\.csv:3: binary label column 'y' expects 0, 1"):
        load_csv_dataset(path, label_columns={"y": "binary"})


def test_text_label_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, "a,y\nx,1\nx,yes\n")
    with pytest.raises(DataError, match=r"data\.csv:3: field 2 \(column 'y'\) expects a "
                                          r"number, got 'yes'"):
        load_csv_dataset(path, label_columns={"y": "binary"})


def test_multiclass_label_column_loads_class_ids_and_empty_as_missing(tmp_path):
    rows = "".join(f"u{i % 3},{i % 4 if i % 5 else ''},{i % 2}\n" for i in range(40))
    path = _write(tmp_path, "user,digit,click\n" + rows)
    data = load_csv_dataset(path, label_columns={"digit": "multiclass:4", "click": "binary"},
                            validation_fraction=0.0, test_fraction=0.0)
    assert data.tasks[0] == TaskSpec("digit", "multiclass", num_classes=4)
    y = data.train.labels["digit"]
    assert y.dtype == np.float32
    expected = [np.nan if i % 5 == 0 else i % 4 for i in range(40)]
    np.testing.assert_array_equal(y, np.array(expected, np.float32))


@pytest.mark.parametrize("bad", ["4", "2.5", "-1"])
def test_bad_multiclass_label_names_file_line_and_column(tmp_path, bad):
    path = _write(tmp_path, f"a,digit\nx,3\nx,{bad}\nx,0\n")
    with pytest.raises(DataError) as err:
        load_csv_dataset(path, label_columns={"digit": "multiclass:4"})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (f"{path}:3: multiclass label column 'digit' expects a class id 0..3 (an "
                   f"integer) or empty, got {float(bad):g}")


def test_multiclass_kind_needs_a_class_count(tmp_path):
    path = _write(tmp_path, "a,digit\nx,3\n")
    for kind in ("multiclass", "multiclass:1", "multiclass:ten"):
        with pytest.raises(UserError, match="multiclass"):
            load_csv_dataset(path, label_columns={"digit": kind})


def test_load_csv_dataset_argument_checks(tmp_path):
    path = _log(tmp_path)
    with pytest.raises(ValueError, match="label_columns"):
        load_csv_dataset(path)
    with pytest.raises(ValueError, match="kind must be one of"):
        load_csv_dataset(path, label_columns={"click": "ranking"})
    with pytest.raises(ValueError, match="< 1"):
        load_csv_dataset(path, label_columns={"click": "binary"}, validation_fraction=0.5,
                         test_fraction=0.5)
    with pytest.raises(ValueError, match="labels and cannot also be features"):
        load_csv_dataset(path, label_columns={"click": "binary"}, numeric=["click"])
    with pytest.raises(DataError, match="does not exist"):
        load_csv_dataset(tmp_path / "missing.csv", label_columns={"click": "binary"})


def _bad_log(n_rows, bad_rows, bad="inf", column="x"):
    """A CSV with a categorical, numeric x and z, a label; ``bad`` in ``column`` of rows."""
    lines = ["c,x,z,y"]
    for i in range(n_rows):
        x = bad if (column == "x" and i in bad_rows) else f"{i % 7}"
        y = bad if (column == "y" and i in bad_rows) else f"{i % 2}"
        lines.append(f"c{i % 3},{x},{i % 5},{y}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad, what", [("inf", "is not a finite number"),
                                       ("-Infinity", "is not a finite number"),
                                       ("nan", "is not a finite number"),
                                       ("NaN", "is not a finite number"),
                                       ("1e39", "is too large for float32")])
def test_non_finite_feature_is_an_error_naming_file_line_and_field(tmp_path, bad, what):
    path = _write(tmp_path, _bad_log(20, {4}, bad))
    with pytest.raises(DataError) as err:
        load_csv_dataset(path, label_columns={"y": "binary"}, numeric=["x", "z"])
    assert str(err.value) == (
        f"{path}:6: field 2 (column 'x'): '{bad}' {what}; fix the value, or pass "
        f"nonfinite='impute' (--csv_nonfinite=impute) to use the training mean for empty and "
        f"non-finite numeric cells.")


@pytest.mark.parametrize("bad", ["nan", "inf", "1e39"])
def test_non_finite_label_is_always_an_error(tmp_path, bad):
    path = _write(tmp_path, _bad_log(20, {2}, bad, column="y"))
    for policy in ("error", "impute"):
        with pytest.raises(DataError, match=rf"data\.csv:4: field 4 \(column 'y'\): '{bad}' "
                                            rf"is .*; leave the cell empty to mark a missing"):
            load_csv_dataset(path, label_columns={"y": "regression"}, numeric=["x", "z"],
                             nonfinite=policy)


def test_impute_uses_the_training_mean_and_logs_the_counts(tmp_path, caplog):
    text = _bad_log(40, {3, 10, 25}, "inf").replace("\nc1,1,", "\nc1,,", 1)  # one empty cell too
    path = _write(tmp_path, text)
    with caplog.at_level("WARNING"):
        data = load_csv_dataset(path, label_columns={"y": "binary"}, numeric=["x", "z"],
                                nonfinite="impute", validation_fraction=0.25,
                                test_fraction=0.25)
    raw = read_csv(path, numeric=["x", "z"], missing_numeric=["x"])
    bad = np.isnan(raw["x"])
    assert bad.sum() == 4
    train_x = data.train.features["x"]
    # The training mean of the finite training cells, for every split's missing cells.
    order = np.random.default_rng(0).permutation(40)
    train_rows = np.sort(order[20:])
    finite_train = raw["x"][train_rows][~bad[train_rows]]
    fill = finite_train.mean()
    np.testing.assert_allclose(train_x, np.where(bad[train_rows], fill, raw["x"][train_rows]))
    for name, split in (("validation", np.sort(order[10:20])), ("test", np.sort(order[:10]))):
        got = data.splits()[name].features["x"]
        np.testing.assert_allclose(got, np.where(bad[split], fill, raw["x"][split]))
    assert all(np.isfinite(s.features["x"]).all() for s in data.splits().values())
    # An imputed cell normalises to exactly 0, as a NaN input does at serving time.
    assert data.spec.numeric[0].mean == pytest.approx(fill, rel=1e-12)
    counts = {k: int(bad[idx].sum()) for k, idx in (("train", train_rows),
                                                     ("validation", np.sort(order[10:20])),
                                                     ("test", np.sort(order[:10])))}
    expected = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    assert f"column 'x': {expected} empty or non-finite cells imputed with the training " \
           f"mean {fill:.6g}." in caplog.text


def test_impute_of_a_log_feature_keeps_it_at_the_mean(tmp_path):
    path = _write(tmp_path, _bad_log(30, {1, 2}, "nan"))
    data = load_csv_dataset(path, label_columns={"y": "binary"}, numeric=["x", "z"],
                            log_numeric=["x"], nonfinite="impute", validation_fraction=0,
                            test_fraction=0)
    x = data.train.features["x"]
    f = np.log1p(np.maximum(x, 0))
    assert f[1] == pytest.approx(data.spec.numeric[0].mean, rel=1e-9)
    finite = np.delete(np.log1p(np.arange(30) % 7), [1, 2])
    assert data.spec.numeric[0].mean == pytest.approx(finite.mean(), rel=1e-9)


def test_unknown_nonfinite_policy(tmp_path):
    path = _write(tmp_path, _bad_log(5, set()))
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        load_csv_dataset(path, label_columns={"y": "binary"}, nonfinite="drop")


def test_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"c,x,y\nred,1,0\nbl\xe9u,2,1\n")
    with pytest.raises(DataError) as err:
        read_csv(path, numeric=["x"])
    assert str(err.value) == (f"{path}:3: byte 0xe9 at column 3 is not UTF-8 text (invalid "
                              f"continuation byte); save the file as UTF-8.")
    gz = tmp_path / "data.csv.gz"
    gz.write_bytes(gzip.compress(b"c,x,y\n" + b"red,1,0\n" * 5000 + b"\xff,1,0\n"))
    with pytest.raises(DataError, match=r"data\.csv\.gz:5002: byte 0xff at column 1 "):
        read_csv(gz, numeric=["x"])


@pytest.mark.parametrize("text, line", [
    ('c,x,y\nred,1,0\n"blue"x,2,1\n', 3),     # text after a closing quote
    ('c,x,y\nred,1,0\n"blue,2,1\nred,3,0\n', 3),  # a quote never closed
])
def test_malformed_quoting_names_file_and_line(tmp_path, text, line):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=rf"data\.csv:{line}: malformed quoting or field "):
        read_csv(path, numeric=["x"])


def test_empty_file_and_header_without_rows_are_one_line(tmp_path):
    empty = _write(tmp_path, "", name="empty.csv")
    with pytest.raises(DataError, match=r"^.*empty\.csv: empty file, expected a header row\.$"):
        load_csv_dataset(empty, label_columns={"y": "binary"})
    header = _write(tmp_path, "c,x,y\n\n", name="header.csv")
    with pytest.raises(DataError) as err:
        load_csv_dataset(header, label_columns={"y": "binary"}, numeric=["x"])
    assert str(err.value) == f"{header}: no data rows after the header."
