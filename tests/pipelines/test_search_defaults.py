"""Per-method defaults of a search run: the published Gumbel matrix's router learning rate."""

import numpy as np

from tfmtnas.pipelines.searching import SearchConfig, arch_optimizer


def test_architecture_learning_rate_defaults_per_method():
    # The reference's router rate for the Gumbel matrix (2e-3 to 6e-3; 5e-3 on MNIST).
    assert SearchConfig(method="gumbel").arch_learning_rate == 5e-3
    assert SearchConfig(method="gumbel_experts").arch_learning_rate == 0.05
    assert SearchConfig(method="mtnas").arch_learning_rate == 0.05
    assert SearchConfig(method="gumbel", arch_learning_rate=0.3).arch_learning_rate == 0.3
    # Resolved on construction: config.json records the rate the run used.
    assert SearchConfig().to_dict()["arch_learning_rate"] == 5e-3
    assert float(arch_optimizer(SearchConfig()).learning_rate) == np.float32(5e-3)
