"""The generic CSV path's vocabulary flags: --csv_hash, --csv_min_count, --csv_max_vocabulary."""

import collections

import pytest
from absl import flags
from absl.testing import flagsaver

from tests.pipelines.conftest import scoped_flags
from tfmtnas.data import load_dataset
from tfmtnas.errors import UserError
from tfmtnas.pipelines import flags as pipeline_flags


@pytest.fixture(autouse=True)
def _data_flags():
    """The dataset flags (of tfmtnas-train, -search and -evaluate), for each test."""
    with scoped_flags():
        pipeline_flags.define_data_flags()
        yield


def _options(tiny_csv, *extra):
    with flagsaver.flagsaver():
        flags.FLAGS(["prog", "--dataset=csv", f"--csv_train={tiny_csv}",
                     "--csv_labels=click:binary", "--csv_numeric=x,z", "--csv_categorical=color",
                     *extra])
        return pipeline_flags.dataset_options()


def _with_rare_colours(tiny_csv):
    lines = tiny_csv.read_text().splitlines()
    lines += ["pink,0.1,0.2,1,0.3", "teal,0.1,0.2,0,0.3", "teal,0.3,0.1,1,0.2"]
    tiny_csv.write_text("\n".join(lines) + "\n")
    return tiny_csv


def test_hash_min_count_and_max_vocabulary_reach_the_spec(tiny_csv):
    path = _with_rare_colours(tiny_csv)
    data = load_dataset("csv", **_options(path, "--csv_hash=color:7"))
    assert [(f.name, f.hash_bins, f.vocabulary) for f in data.spec.categorical] == [
        ("color", 7, None)]
    data = load_dataset("csv", **_options(path, "--csv_min_count=2"))
    counts = collections.Counter(data.train.features["color"].tolist())
    want = sorted((v for v in counts if counts[v] >= 2), key=lambda v: (-counts[v], v))
    assert list(data.spec.categorical[0].vocabulary) == want
    assert "pink" not in want  # seen once: out of vocabulary
    data = load_dataset("csv", **_options(path, "--csv_max_vocabulary=2"))
    assert list(data.spec.categorical[0].vocabulary) == want[:2]


def test_bad_hash_flag_is_a_user_error(tiny_csv):
    with pytest.raises(UserError, match="--csv_hash wants name:bins.*'color:x'"):
        _options(tiny_csv, "--csv_hash=color:x")
