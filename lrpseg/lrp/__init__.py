"""Whole-output Layer-wise Relevance Propagation for segmentation and classification CNNs."""

from lrpseg.lrp.bias_free import BiasFree
from lrpseg.lrp.cam import seg_grad_cam
from lrpseg.lrp.composites import COMPOSITES
from lrpseg.lrp.engine import PreparedModel, Propagation, prepare, propagate, run
from lrpseg.lrp.errors import LRPError, RuleError, UnsupportedOperationError
from lrpseg.lrp.explain import Explanation, explain
from lrpseg.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, WSquare, ZBox, Zero, ZPlus

__all__ = [
    "COMPOSITES",
    "AlphaBeta",
    "BiasFree",
    "Epsilon",
    "Explanation",
    "Flat",
    "Gamma",
    "LRPError",
    "Norm",
    "Pass",
    "PreparedModel",
    "Propagation",
    "Rule",
    "RuleError",
    "UnsupportedOperationError",
    "WSquare",
    "ZBox",
    "ZPlus",
    "Zero",
    "explain",
    "prepare",
    "propagate",
    "run",
    "seg_grad_cam",
]
