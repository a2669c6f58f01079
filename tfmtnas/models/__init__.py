"""Multi-task models: the TFRS ranking model, its embedding, and the sharing zoo."""

from tfmtnas.models.embedding import FeatureEmbedding
from tfmtnas.models.multitask import MultiTaskModel
from tfmtnas.models.optimizers import OPTIMIZERS, LazyAdam, make_optimizer
from tfmtnas.models.zoo import SHARING_KINDS, build_sharing

__all__ = ["FeatureEmbedding", "LazyAdam", "MultiTaskModel", "OPTIMIZERS", "SHARING_KINDS",
           "build_sharing", "make_optimizer"]
