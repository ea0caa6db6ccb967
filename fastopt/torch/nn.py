"""``torch.nn`` loss modules over fastopt's fused loss kernels: the torch classes themselves
(same constructor, buffers, state_dict and repr), with forward calling fastopt.torch.functional.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss", "KLDivLoss",
           "L1Loss", "MSELoss", "SmoothL1Loss"]


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss on the fused kernel; see fastopt.torch.cross_entropy."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class MSELoss(torch.nn.MSELoss):
    """torch.nn.MSELoss on the fused kernel; see fastopt.torch.mse_loss."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    """torch.nn.L1Loss on the fused kernel; see fastopt.torch.l1_loss."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class HuberLoss(torch.nn.HuberLoss):
    """torch.nn.HuberLoss on the fused kernel; see fastopt.torch.huber_loss."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    """torch.nn.SmoothL1Loss on the fused kernel; see fastopt.torch.smooth_l1_loss."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(torch.nn.BCELoss):
    """torch.nn.BCELoss on the fused kernel; see fastopt.torch.binary_cross_entropy."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight,
                                      reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss on the fused kernel; see
    fastopt.torch.binary_cross_entropy_with_logits."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  pos_weight=self.pos_weight,
                                                  reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    """torch.nn.KLDivLoss on the fused kernel; see fastopt.torch.kl_div."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
