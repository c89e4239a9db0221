"""Metrics of saliency maps: deletion / insertion faithfulness, spatial pointing game, cascade-randomization sanity."""

from aosa.kernels.metrics.faithfulness import (CURVES, STEPS, Faithfulness, auc, curve_points, deletion_curve, faithfulness,
                                          insertion_curve, perturbation_curve, rank_order)
from aosa.kernels.metrics.pointing import Pointing, box_energy, dataset_pointing, pointing_game
from aosa.kernels.metrics.sanity import cascade_layers, cascade_randomization, spearman

__all__ = ["CURVES", "STEPS", "Faithfulness", "curve_points", "Pointing", "auc", "box_energy", "cascade_layers",
           "cascade_randomization", "dataset_pointing", "deletion_curve", "faithfulness", "insertion_curve",
           "perturbation_curve", "pointing_game", "rank_order", "spearman"]
