"""Tests for tfmtnas.data.census on small files in the raw UCI format, and on the real data."""

import gzip

import numpy as np
import pytest

from tfmtnas.data import DataError, load_census
from tfmtnas.data import census as census_lib


def _row(i):
    """One raw record: 42 fields joined by ", ", varying with i."""
    values = {c: "Not in universe" for c in census_lib.COLUMNS}
    values.update({
        "age": str(20 + i % 50),
        "detailed_industry_recode": str(i % 4),
        "detailed_occupation_recode": str(i % 3),
        "education": ["High school graduate", "Children", "Bachelors degree(BA AB BS)"][i % 3],
        "wage_per_hour": str(100 * (i % 5)),
        "marital_stat": ["Never married", "Married-civilian spouse present", "Divorced"][i % 3],
        "sex": ["Female", "Male"][i % 2],
        "capital_gains": "0",
        "capital_losses": str(1000 * (i % 2)),
        "dividends_from_stocks": str(i),
        "instance_weight": f"{1000 + i}.5",
        "migration_code_change_in_msa": "?",
        "num_persons_worked_for_employer": str(i % 7),
        "family_members_under_18": "Not in universe",
        "citizenship": "Foreign born- Not a citizen of U S ",
        "own_business_or_self_employed": "0",
        "veterans_benefits": "2",
        "weeks_worked_in_year": str(i % 53),
        "year": ["94", "95"][i % 2],
        "income_label": "50000+." if i % 4 == 0 else "- 50000.",
    })
    return ", ".join(values[c] for c in census_lib.COLUMNS)


def _write(path, n, start=0, extra=""):
    text = "".join(_row(i) + "\n" for i in range(start, start + n)) + extra
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def uci_dir(tmp_path):
    _write(tmp_path / "census-income.data", 40)
    _write(tmp_path / "census-income.test", 21, start=1000)
    return tmp_path


def test_columns_follow_the_uci_names_file():
    assert len(census_lib.COLUMNS) == 42 and len(set(census_lib.COLUMNS)) == 42
    assert census_lib.COLUMNS[24] == "instance_weight" and census_lib.COLUMNS[-1] == "income_label"
    assert len(census_lib.CATEGORICAL) == 32 and len(census_lib.NUMERIC) == 7


def test_load_census_from_uci_files(uci_dir):
    data = load_census(uci_dir, seed=0)
    assert data.name == "census"
    assert [(t.name, t.kind) for t in data.tasks] == [("income", "binary"), ("marital", "binary")]
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 10, 11)
    np.testing.assert_array_equal(data.train.labels["income"], [i % 4 == 0 for i in range(40)])
    np.testing.assert_array_equal(data.train.labels["marital"], [i % 3 == 0 for i in range(40)])
    assert data.train.labels["income"].dtype == np.float32
    feats = data.train.features
    for dropped in ("marital_stat", "instance_weight", "income_label"):
        assert dropped not in feats and dropped not in data.spec.names
    assert len(feats) == 39 and set(feats) == set(data.spec.names)
    np.testing.assert_array_equal(feats["age"], [20 + i % 50 for i in range(40)])
    assert feats["year"].tolist()[:2] == ["94", "95"]  # coded integers stay strings
    assert feats["citizenship"][0] == "Foreign born- Not a citizen of U S"  # stripped
    assert feats["migration_code_change_in_msa"][0] == "?"  # unknown is a value of its own
    num = {f.name: f for f in data.spec.numeric}
    assert {n for n, f in num.items() if f.log} == set(census_lib.LOG_NUMERIC)
    assert num["age"].mean == pytest.approx(np.mean([20 + i % 50 for i in range(40)]))
    cats = {f.name: f for f in data.spec.categorical}
    assert set(cats["education"].vocabulary) == {"High school graduate", "Children",
                                                 "Bachelors degree(BA AB BS)"}


def test_heldout_split_is_seeded_and_disjoint(uci_dir):
    a, b, c = load_census(uci_dir, seed=5), load_census(uci_dir, seed=5), load_census(uci_dir)
    np.testing.assert_array_equal(a.test.features["age"], b.test.features["age"])
    weights = np.concatenate([a.validation.features["dividends_from_stocks"],
                              a.test.features["dividends_from_stocks"]])
    np.testing.assert_array_equal(np.sort(weights), np.arange(1000, 1021))
    assert not np.array_equal(a.test.features["dividends_from_stocks"],
                              c.test.features["dividends_from_stocks"])


def test_themis_names_and_gzip_accepted(tmp_path):
    _write(tmp_path / "census_income_1994_1995_train.csv.gz", 8)
    _write(tmp_path / "census_income_1994_1995_test.csv", 4)
    data = load_census(tmp_path)
    assert (len(data.train), len(data.validation), len(data.test)) == (8, 2, 2)


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_census(tmp_path / "nope")


def test_missing_file(tmp_path):
    _write(tmp_path / "census-income.data", 4)
    with pytest.raises(DataError,
                       match=r"no census test file; expected one of .*census-income\.test"):
        load_census(tmp_path)


def test_wrong_field_count(tmp_path):
    _write(tmp_path / "census-income.data", 5, extra="1, 2, 3\n")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError, match=r"census-income\.data:6: expected 42 fields, got 3"):
        load_census(tmp_path)


def test_text_in_numeric_column(tmp_path):
    bad = _row(0).replace("20, ", "twenty, ", 1)
    _write(tmp_path / "census-income.data", 3, extra=bad + "\n")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError,
                       match=r"census-income\.data:4: field 1 \(column 'age'\) expects a number, "
                             r"got 'twenty'"):
        load_census(tmp_path)


def test_unknown_income_label(tmp_path):
    _write(tmp_path / "census-income.data", 2, extra=_row(1).replace("- 50000.", ">50K") + "\n")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError, match=r"census-income\.data:3: column 'income_label' expects"):
        load_census(tmp_path)


def test_real_census_via_fetch():
    """Downloads the pinned archive on first use (about 9 MB), then reads from the cache."""
    data = load_census()
    assert (len(data.train), len(data.validation), len(data.test)) == (199_523, 49_881, 49_881)
    income = data.train.labels["income"]
    marital = data.train.labels["marital"]
    assert income.mean() == pytest.approx(12_382 / 199_523)  # 6.21% earn more than 50K
    assert marital.mean() == pytest.approx(0.4335, abs=1e-4)
    for split in (data.validation, data.test):
        assert 0.058 < split.labels["income"].mean() < 0.066
    assert len(data.spec.categorical) == 32 and len(data.spec.numeric) == 7
    assert {f.name: len(f.vocabulary) for f in data.spec.categorical}["year"] == 2


@pytest.mark.parametrize("value, what", [("inf", "is not a finite number"),
                                         ("nan", "is not a finite number"),
                                         ("1e39", "is too large for float32")])
def test_non_finite_number_names_file_line_and_field(tmp_path, value, what):
    bad = _row(0).replace("20, ", f"{value}, ", 1)
    _write(tmp_path / "census-income.data", 3, extra=bad + "\n")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError) as err:
        load_census(tmp_path)
    assert str(err.value).startswith(
        f"{tmp_path / 'census-income.data'}:4: field 1 (column 'age'): '{value}' {what}; ")


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "census-income.data"
    _write(path, 3)
    bad = _row(9).replace("Not in universe", "Not in univ\xe9rse", 1).encode("latin-1")
    path.write_bytes(path.read_bytes() + bad + b"\n")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError, match=r"census-income\.data:4: byte 0xe9 at column \d+ is "
                                        r"not UTF-8 text"):
        load_census(tmp_path)


def test_empty_file_is_one_line(tmp_path):
    (tmp_path / "census-income.data").write_text("")
    _write(tmp_path / "census-income.test", 2)
    with pytest.raises(DataError, match=r"census-income\.data: no rows; expected the UCI "):
        load_census(tmp_path)
