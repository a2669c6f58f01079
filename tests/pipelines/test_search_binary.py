"""tfmtnas-search end to end on tiny data: outputs, resume, and one-line errors."""

import json

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module

FAST = ["--expert_units=4", "--tower_units=2", "--num_experts=2", "--batch_size=64",
        "--log_every=2"]


@pytest.mark.parametrize("method", ["mtnas", "gumbel", "mtlnas"])
def test_search_writes_spec_pictures_tensorboard_and_child(method, tiny_csv, tmp_path):
    out = tmp_path / method
    cost = [] if method == "mtlnas" else ["--cost_weight=0.05"]
    done = run_module("tfmtnas.pipelines.search", *CSV_FLAGS, f"--csv_train={tiny_csv}",
                      f"--method={method}", "--epochs=2", "--child_epochs=1", *FAST, *cost,
                      f"--jit_compile={method == 'gumbel'}", f"--model_dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    options = json.loads((out / "config.json").read_text())["method_options"]
    assert options.get("cost_weight") == (0.05 if cost else None)
    from tfmtnas.pipelines.training import load_model
    from tfmtnas.search import StreamSpec, forward_flops, prune
    from tfmtnas.search.streams import spec_from_json

    derived = spec_from_json((out / "derived_spec.json").read_text())
    # The published Gumbel matrix derives task x component allocations, the others graphs.
    assert isinstance(derived, StreamSpec) == (method == "gumbel")
    assert not derived.searched
    for png in ("allocation.png", "derived_graph.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cost"]["child_flops"] == forward_flops(derived, 1 * 8 + 2)
    assert metrics["cost"]["child_flops"] <= metrics["cost"]["supernet_flops"]
    assert 0.0 <= metrics["child_test"]["click_auc"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    if method == "mtlnas":
        # The paper's child: the supernet's weights under its final edges, not retrained,
        # so its test metrics are the supernet's (evaluated under those edges).
        assert config["child"] == "inherit"
        for name, value in metrics["supernet_test"].items():
            assert metrics["child_test"][name] == pytest.approx(value, abs=1e-5), name
    else:
        assert config["child"] == "finetune"
    child = load_model(out / "child")
    assert child.sharing.spec == (derived.prune() if method == "gumbel" else prune(derived))

    import tensorflow as tf

    tags = set()
    for event_file in (out / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert any(t.startswith("arch/") for t in tags), tags
    assert "train/click_loss" in tags


def test_rerun_resumes_from_last_checkpoint(tiny_csv, tmp_path):
    out = tmp_path / "resume"
    args = [*CSV_FLAGS, f"--csv_train={tiny_csv}", "--method=gumbel", *FAST,
            "--child_epochs=0", "--jit_compile=false", f"--model_dir={out}"]
    first = run_module("tfmtnas.pipelines.search", *args, "--epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoints" / "checkpoint").exists()
    second = run_module("tfmtnas.pipelines.search", *args, "--epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming the search at epoch 2 of 2." in second.stdout
    assert "Epoch 2/2" in second.stdout + second.stderr
    assert "Epoch 1/2" not in second.stdout + second.stderr


def test_unknown_method(tiny_csv, tmp_path):
    done = run_module("tfmtnas.pipelines.search", "--method=darts", f"--model_dir={tmp_path}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--method" in done.stderr and "mtnas" in done.stderr


def test_cost_weight_is_refused_for_mtlnas(tmp_path):
    done = run_module("tfmtnas.pipelines.search", "--method=mtlnas", "--cost_weight=0.1",
                      f"--model_dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "--cost_weight applies to --method=gumbel or mtnas" in last_line(done.stderr)


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    (None, "allocation must be 0/1 with one row per task"),
    ("routing", "is a RoutingSpec; --method=gumbel searches a StreamSpec"),
])
def test_bad_spec_file(text, needle, tiny_csv, tmp_path):
    from tfmtnas.search.methods import search_space

    if text is None:
        spec = json.loads(search_space("gumbel", ["click", "watch"], 2, 2, (4,)).to_json())
        spec["layers"][0]["allocation"] = [[1, 2], [0, 1]]
        text = json.dumps(spec)
    elif text == "routing":  # a routing graph for the default --method=gumbel
        text = search_space("gumbel_experts", ["click", "watch"], 2, 2, (4,)).to_json()
    path = tmp_path / "spec.json"
    path.write_text(text)
    done = run_module("tfmtnas.pipelines.search", *CSV_FLAGS, f"--csv_train={tiny_csv}",
                      f"--spec={path}", "--epochs=1", f"--model_dir={tmp_path / 'out'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    line = last_line(done.stderr)
    assert line.startswith("tfmtnas-search: error:") and needle in line, line


def test_empty_validation_split_is_a_clear_error():
    from tfmtnas.data import DataError, make_synthetic
    from tfmtnas.pipelines.searching import SearchConfig, run_search

    data = make_synthetic(num_train=64, num_validation=10, num_test=10, dim=4)
    data.validation = data.validation.take(np.arange(0))
    with pytest.raises(DataError, match="validation split is empty"):
        run_search(SearchConfig(dataset="synthetic", method="mtnas", epochs=1), data=data)


def test_architecture_optimizer_choice():
    from tfmtnas.pipelines.searching import SearchConfig, arch_optimizer, run_search

    assert SearchConfig().arch_optimizer == "adam"
    opt = arch_optimizer(SearchConfig(arch_optimizer="sgd", arch_learning_rate=0.3))
    assert type(opt).__name__ == "SGD"
    np.testing.assert_allclose(float(opt.learning_rate), 0.3)
    assert type(arch_optimizer(SearchConfig())).__name__ == "Adam"
    with pytest.raises(ValueError, match="arch_optimizer must be one of.*'rmsprop'"):
        run_search(SearchConfig(dataset="synthetic", arch_optimizer="rmsprop"))
