"""Plain-PyTorch re-identification building blocks: evaluation, losses, P x K sampling."""

from trainers.reid.evaluate import (
    ReidMetrics,
    compute_distance_matrix,
    evaluate_distmat,
    evaluate_reid,
)
from trainers.reid.losses import (
    BNNeck,
    ReidCriterion,
    pairwise_euclidean,
    soft_margin_triplet_loss,
)
from trainers.reid.sampler import pk_batches

__all__ = [
    "BNNeck",
    "ReidCriterion",
    "ReidMetrics",
    "compute_distance_matrix",
    "evaluate_distmat",
    "evaluate_reid",
    "pairwise_euclidean",
    "pk_batches",
    "soft_margin_triplet_loss",
]
