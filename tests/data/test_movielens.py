"""Tests for tfmtnas.data.movielens on tiny hand-made tables and on the real MovieLens 100K."""

import numpy as np
import pytest

from tfmtnas import data as data_lib
from tfmtnas.data import DataError, load_movielens
from tfmtnas.data import movielens as ml

# user id, age, gender, occupation, zip code
USERS = [
    ("1", 24, "M", "technician", "85711"),
    ("2", 53, "F", "other", "94043"),
    ("3", 39, "M", "scientist", "T8H1N"),
]
# item id, GroupLens title, release date, genres; RecBole title/year as its release tool made
ITEMS = [
    ("10", "Toy Story (1995)", "01-Jan-1995", ("Animation", "Children's", "Comedy"),
     "Toy Story", "1995"),
    ("11", "Kolya (1996)", "24-Jan-1997", ("Comedy",), "Kolya", "1996"),
    ("12", "Café au lait (1993)", "01-Jan-1994", ("Drama", "Sci-Fi"), "Café au lait", "1993"),
    ("13", "No Year Here", "01-Jan-1990", ("Film-Noir",), "No Year Here", "1990"),
    ("14", "unknown", "", ("unknown",), "unkonwn", "unkonwn"),
]
# user, item, rating, timestamp (not in time order)
RATINGS = [
    ("1", "10", 5, 1000), ("2", "10", 3, 400), ("3", "11", 4, 900), ("1", "12", 1, 100),
    ("2", "13", 2, 700), ("3", "14", 5, 300), ("1", "11", 4, 800), ("2", "12", 3, 200),
    ("3", "10", 1, 600), ("1", "14", 4, 500),
]


def _write_grouplens(root):
    root.mkdir(exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    (root / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in USERS))
    lines = []
    for item, title, date, genres, _, _ in ITEMS:
        flags = ["1" if g in genres else "0" for g in ml.GENRES]
        lines.append("|".join([item, title, date, "", "http://example.invalid/", *flags]))
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root


def _write_recbole(root):
    root.mkdir(exist_ok=True)
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    (root / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join("\t".join(map(str, u)) + "\n" for u in USERS))
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{title}\t{year}\t{' '.join(g)}\n"
                  for i, _, _, g, title, year in ITEMS), encoding="utf-8")
    return root


@pytest.fixture
def grouplens_dir(tmp_path):
    return _write_grouplens(tmp_path / "grouplens")


def test_genre_feature_names_are_signature_safe():
    assert len(ml.GENRE_FEATURES) == 19 == len(set(ml.GENRE_FEATURES))
    assert ml.GENRE_FEATURES[:5] == ("g_unknown", "g_action", "g_adventure", "g_animation",
                                     "g_childrens")
    assert "g_film_noir" in ml.GENRE_FEATURES and "g_sci_fi" in ml.GENRE_FEATURES
    for name in ml.GENRE_FEATURES:
        assert name.replace("_", "").isalnum() and name.islower(), name


def test_read_grouplens_tables(grouplens_dir):
    cols = ml.read_movielens(grouplens_dir)
    assert cols["user_id"].tolist() == [u for u, _, _, _ in RATINGS]
    assert cols["item_id"].tolist() == [i for _, i, _, _ in RATINGS]
    np.testing.assert_array_equal(cols["rating"], [r for _, _, r, _ in RATINGS])
    np.testing.assert_array_equal(cols["timestamp"], [t for _, _, _, t in RATINGS])
    # joined user features: rating 0 is user 1, rating 2 is user 3
    assert cols["age"][:3].tolist() == [24.0, 53.0, 39.0] and cols["age"].dtype == np.float32
    assert cols["gender"][:3].tolist() == ["M", "F", "M"]
    assert cols["occupation"][2] == "scientist"
    assert cols["zip_prefix"][:3].tolist() == ["85", "94", "T8"]
    # release year: title year first (Kolya 1996, not its 1997 release date), else the release
    # date's year, else the median of the known years (1990, 1993, 1995, 1996 -> 1994)
    year = dict(zip(cols["item_id"].tolist(), cols["release_year"].tolist(), strict=True))
    assert year == {"10": 1995.0, "11": 1996.0, "12": 1993.0, "13": 1990.0, "14": 1994.0}
    # genre flags of item 10 (rating 0) and item 12 (rating 3, Latin-1 title)
    on = {n for n in ml.GENRE_FEATURES if cols[n][0] == 1.0}
    assert on == {"g_animation", "g_childrens", "g_comedy"}
    assert {n for n in ml.GENRE_FEATURES if cols[n][3] == 1.0} == {"g_drama", "g_sci_fi"}
    assert {n for n in ml.GENRE_FEATURES if cols[n][5] == 1.0} == {"g_unknown"}
    assert all(set(np.unique(cols[n])) <= {0.0, 1.0} for n in ml.GENRE_FEATURES)


def test_recbole_and_grouplens_formats_agree(tmp_path):
    a = ml.read_movielens(_write_grouplens(tmp_path / "gl"))
    b = ml.read_movielens(_write_recbole(tmp_path / "rb"))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_load_movielens_split_by_time(grouplens_dir):
    data = load_movielens(grouplens_dir)
    assert data.name == "movielens"
    assert [(t.name, t.kind) for t in data.tasks] == [("rating", "regression"),
                                                      ("liked", "binary")]
    # 10 ratings: the latest 2 are test; of the other 8, the latest round(0.8) = 1 validation
    assert (len(data.train), len(data.validation), len(data.test)) == (7, 1, 2)
    by_time = sorted(RATINGS, key=lambda r: r[3])
    np.testing.assert_array_equal(data.train.labels["rating"], [r[2] for r in by_time[:7]])
    np.testing.assert_array_equal(data.validation.labels["rating"], [by_time[7][2]])
    np.testing.assert_array_equal(data.test.labels["rating"], [r[2] for r in by_time[8:]])
    assert data.test.features["item_id"].tolist() == ["11", "10"]  # at 900 and 1000
    for split in data.splits().values():
        assert split.labels["rating"].dtype == np.float32
        np.testing.assert_array_equal(split.labels["liked"], split.labels["rating"] >= 4)
        assert set(split.features) == set(data.spec.names)
    assert [f.name for f in data.spec.categorical] == list(ml.CATEGORICAL)
    assert [f.name for f in data.spec.numeric] == list(ml.NUMERIC)
    # the spec is fitted on train only
    assert set(data.spec.categorical[1].vocabulary) == {r[1] for r in by_time[:7]}
    age = data.spec.numeric[0]
    assert age.mean == pytest.approx(data.train.features["age"].mean())


def test_fractions(grouplens_dir):
    data = load_movielens(grouplens_dir, test_fraction=0.5, validation_fraction=0.4)
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 2, 5)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        load_movielens(grouplens_dir, test_fraction=1.0)
    with pytest.raises(ValueError, match="leave an empty split"):
        load_movielens(grouplens_dir, validation_fraction=0.01)


def test_time_split_ties_keep_file_order():
    train, validation, test = ml.time_split(np.array([5, 1, 5, 1, 3]), 0.4, 0.34)
    assert (train.tolist(), validation.tolist(), test.tolist()) == ([1, 3], [4], [0, 2])


def test_load_dataset_dispatch(grouplens_dir):
    assert "movielens" in data_lib.dataset_names()
    data = data_lib.load_dataset("movielens", data_dir=grouplens_dir, test_fraction=0.3)
    assert data.name == "movielens" and len(data.test) == 3


def test_missing_dir_and_files(tmp_path, grouplens_dir):
    with pytest.raises(DataError, match="movielens data_dir does not exist"):
        load_movielens(tmp_path / "nowhere")
    (grouplens_dir / "u.item").unlink()
    with pytest.raises(DataError, match=r"u\.item: movielens items file not found"):
        load_movielens(grouplens_dir)
    recbole = _write_recbole(tmp_path / "rb")
    (recbole / "ml-100k.user").unlink()
    with pytest.raises(DataError, match=r"ml-100k\.user: movielens users file not found"):
        load_movielens(recbole)


@pytest.mark.parametrize("file,text,message", [
    ("u.data", "1\t10\t5\n", r"u\.data:1: expected 4 fields"),
    ("u.data", "1\t10\tfive\t100\n", r"u\.data:1: column 'rating' expects a finite "
               r"number, got 'five'"),
    ("u.data", "1\t10\t7\t100\n", r"u\.data:1: column 'rating' expects 1 to 5 stars"),
    ("u.data", "1\t10\t5\t100\n9\t10\t5\t200\n", r"u\.data:2: user id '9' is not in u\.user"),
    ("u.data", "1\t99\t5\t100\n", r"u\.data:1: item id '99' is not in u\.item"),
    ("u.data", "\n", r"u\.data: no ratings"),
    ("u.user", "1|24|M|technician|85711\n1|30|F|other|10001\n", r"u\.user:2: user id '1' "
                                                                 r"appears twice"),
    ("u.user", "1|old|M|technician|85711\n", r"u\.user:1: column 'age' expects a finite number"),
])
def test_malformed_files(grouplens_dir, file, text, message):
    (grouplens_dir / file).write_text(text)
    with pytest.raises(DataError, match=message):
        load_movielens(grouplens_dir)


def test_malformed_recbole_files(tmp_path):
    root = _write_recbole(tmp_path / "rb")
    item = root / "ml-100k.item"
    item.write_text(item.read_text().replace("Film-Noir", "Noir"))
    with pytest.raises(DataError, match=r"ml-100k\.item:5: unknown genre 'Noir'"):
        load_movielens(root)
    (root / "ml-100k.user").write_text("user_id:token\tage:token\n1\t24\n")
    with pytest.raises(DataError, match=r"ml-100k\.user:1: header lacks column\(s\) "
                                         r"\['gender', 'occupation', 'zip_code'\]"):
        load_movielens(root)


def test_real_movielens_via_fetch():
    """Downloads the pinned recbole wheel on first use (about 2 MB), then reads the cache."""
    cols = ml.read_movielens()
    assert len(cols["rating"]) == 100_000
    assert len(set(cols["user_id"].tolist())) == 943
    assert len(set(cols["item_id"].tolist())) == 1_682
    # first line of the ratings file: user 196 (49, M, writer, 55105) rated Kolya (1996) 3
    first = {k: v[0] for k, v in cols.items()}
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == \
        ("196", "242", 3.0, 881250949)
    assert (first["age"], first["gender"], first["occupation"], first["zip_prefix"]) == \
        (49.0, "M", "writer", "55")
    assert first["release_year"] == 1996.0 and first["g_comedy"] == 1.0
    assert sum(first[g] for g in ml.GENRE_FEATURES) == 1.0
    assert not np.isnan(cols["release_year"]).any()
    assert 1900 <= cols["release_year"].min() and cols["release_year"].max() <= 1998

    data = load_movielens()
    assert (len(data.train), len(data.validation), len(data.test)) == (72_000, 8_000, 20_000)
    train, validation, test = ml.time_split(cols["timestamp"])
    ts = cols["timestamp"]
    assert ts[train].max() <= ts[validation].min()
    assert ts[validation].max() <= ts[test].min()
    assert ts[np.concatenate([train, validation])].max() <= ts[test].min()
    for split, index in ((data.train, train), (data.validation, validation), (data.test, test)):
        np.testing.assert_array_equal(split.features["user_id"], cols["user_id"][index])
        np.testing.assert_array_equal(split.labels["rating"], cols["rating"][index])
        assert split.labels["liked"].mean() == pytest.approx(
            (split.labels["rating"] >= 4).mean())
    all_liked = np.concatenate([s.labels["liked"] for s in data.splits().values()])
    assert all_liked.mean() == pytest.approx((cols["rating"] >= 4).mean())
    assert all_liked.mean() == pytest.approx(0.55375)
    vocab = {f.name: len(f.vocabulary) for f in data.spec.categorical}
    assert vocab["gender"] == 2 and vocab["occupation"] == 21
    assert vocab["user_id"] < 943  # later users are unseen in train: out of vocabulary


def test_recbole_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path):
    root = _write_recbole(tmp_path / "rb")
    user = root / "ml-100k.user"
    lines = user.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"\t", b"\t\xff", 1)
    user.write_bytes(b"\n".join(lines))
    col = lines[2].index(b"\xff") + 1
    with pytest.raises(DataError, match=rf"ml-100k\.user:3: byte 0xff at column {col} is not "
                                        rf"utf-8 text"):
        load_movielens(root)


@pytest.mark.parametrize("age", ["inf", "nan", "1e39"])
def test_non_finite_numbers_are_refused(grouplens_dir, age):
    (grouplens_dir / "u.user").write_text(f"1|{age}|M|technician|85711\n")
    with pytest.raises(DataError, match=rf"u\.user:1: column 'age' expects a finite number, "
                                        rf"got '{age}'"):
        load_movielens(grouplens_dir)
