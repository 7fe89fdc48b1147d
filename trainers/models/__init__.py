"""Encoders, fusions and heads."""

from trainers.models.encoders import ENCODERS, create_encoder
from trainers.models.fusion import AvgFusion, ConcatFusion, LateFusion, create_head

__all__ = ["ENCODERS", "AvgFusion", "ConcatFusion", "LateFusion", "create_encoder", "create_head"]
