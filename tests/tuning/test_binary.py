"""tfmtnas-tune's flags resolve into a TuneConfig; bad flags are one-line user errors."""

import json

import pytest
from absl.testing import flagsaver

from tests.pipelines.conftest import binary_module
from tfmtnas.errors import UserError


def test_flags_resolve_into_a_tune_config(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"architecture": ["mmoe", "ple"], "embedding_dim": 4}))
    with binary_module("tfmtnas.pipelines.tune"):
        from tfmtnas.pipelines import flags as pipeline_flags

        with flagsaver.flagsaver(model_dir=str(tmp_path / "study"), oracle="hyperband",
                                 max_trials=0, time_budget="90m", space=str(space),
                                 hp=["embedding_dim=8", "learning_rate={\"min\":0.001,"
                                     "\"max\":0.002}"],
                                 select="mean_auc,flops<=1000", pareto=["click_auc", "flops"],
                                 epochs=3, jit_compile=False):
            cfg = pipeline_flags.tune_config()
        assert cfg.oracle == "hyperband" and cfg.max_trials is None
        assert cfg.time_budget == 5400.0
        assert cfg.space == {"architecture": ["mmoe", "ple"], "embedding_dim": 8,
                             "learning_rate": {"min": 0.001, "max": 0.002}}
        assert (cfg.select, cfg.pareto, cfg.epochs) == ("mean_auc,flops<=1000",
                                                        ("click_auc", "flops"), 3)
        assert cfg.trial_options().epochs == 3 and cfg.jit_compile is False
        for bad, message in [({"time_budget": "soon"}, "--time_budget wants seconds"),
                             ({"time_budget": "0"}, "must be > 0"),
                             ({"max_trials": 0}, "needs --oracle=hyperband"),
                             ({"hp": ["architecture"]}, "name=value")]:
            with flagsaver.flagsaver(model_dir="x", **bad), pytest.raises(UserError,
                                                                          match=message):
                pipeline_flags.tune_config()
