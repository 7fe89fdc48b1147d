"""Modality imbalance ratio (MIR) and degree of modality competition (DMC), ReconBoost D.3.

For a strong modality a and a weak modality b, MIR = acc_a / acc_b. The strong modality is the
one that is better in the **unimodal** runs, and it stays the numerator for the multimodal
method too (so MIR_mm < 1 means the method made the weak modality the better one, as
ReconBoost's row of Table 11 shows). MIR_uni uses the unimodal runs' accuracies, MIR_mm the
method's linear-probe accuracies, and DMC = MIR_mm / MIR_uni: above 1, joint training widened
the gap between modalities (competition). With M > 2 modalities each of MIR_uni and MIR_mm is
the geometric mean over all pairs, so DMC is the geometric mean of the pairs' DMCs (eq. 29).

Check (docs/protocol.md): CREMA-D uni 56.67 / 50.14 -> MIR 1.13; concat 54.86 / 26.81 ->
MIR 2.05; DMC 1.81. Scores may be fractions or percentages (ratios do not care), and mAP works
the same way for reid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Competition:
    """MIR of the unimodal runs and of a method, and their ratio DMC."""

    order: tuple[str, ...]  # modalities from strongest to weakest in the unimodal runs
    mir_uni: float
    mir_mm: float

    @property
    def dmc(self) -> float:
        return self.mir_mm / self.mir_uni


def strength_order(unimodal: Mapping[str, float]) -> tuple[str, ...]:
    """Modalities from strongest to weakest unimodal score (ties keep the given order)."""
    names = list(unimodal)
    return tuple(sorted(names, key=lambda m: (-unimodal[m], names.index(m))))


def imbalance_ratio(scores: Mapping[str, float], order: Sequence[str]) -> float:
    """Geometric mean over pairs (a before b in ``order``) of scores[a] / scores[b]."""
    _check_scores(scores, order)
    ratios = [scores[a] / scores[b] for a, b in itertools.combinations(order, 2)]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def modality_competition(unimodal: Mapping[str, float],
                         multimodal: Mapping[str, float]) -> Competition:
    """MIR_uni, MIR_mm and DMC from per-modality scores (unimodal runs, the method's probes)."""
    if set(unimodal) != set(multimodal):
        raise ValueError(f"MIR needs the same modalities on both sides: unimodal runs have "
                         f"{sorted(unimodal)}, the method's probes {sorted(multimodal)}")
    order = strength_order(unimodal)
    return Competition(order, imbalance_ratio(unimodal, order), imbalance_ratio(multimodal, order))


def _check_scores(scores: Mapping[str, float], order: Sequence[str]) -> None:
    if len(order) < 2:
        raise ValueError(f"MIR needs at least 2 modalities but got {list(order)}")
    missing = [m for m in order if m not in scores]
    if missing:
        raise ValueError(f"MIR: no score for modality {missing[0]!r}; scores cover "
                         f"{sorted(scores)}")
    for m in order:
        value = scores[m]
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"MIR: the score of modality {m!r} must be positive and finite but "
                             f"got {value!r} (a ratio with a zero score is undefined)")
