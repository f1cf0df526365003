"""Building blocks shared by the EDVR network: residual blocks and the DCN pack."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from .deform import deform_conv3x3
from .stable import StableConv2d

_KERNEL_TAPS = 9  # every deformable conv in EDVR is 3x3


class ResidualBlockNoBN(nn.Module):
    """Residual block without normalisation: ``x + conv2(relu(conv1(x)))``.

    Args:
        num_feat: Channel count C of input and output.
    """

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = StableConv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = StableConv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        # Small residual branches keep a deep untrained stack near identity.
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)
                conv.weight.mul_(0.1)
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Features, shape (N, C, H, W).

        Returns:
            Features of the same shape.
        """
        return x + self.conv2(self.relu(self.conv1(x)))


def make_layer(block: Callable[..., nn.Module], num_blocks: int, **kwargs: Any) -> nn.Sequential:
    """Stack ``num_blocks`` freshly built ``block(**kwargs)`` modules.

    Args:
        block: Module class or factory.
        num_blocks: How many to stack.
        **kwargs: Passed to every ``block`` call.

    Returns:
        The blocks in an ``nn.Sequential`` (state-dict keys ``0.``, ``1.``, ...).
    """
    return nn.Sequential(*(block(**kwargs) for _ in range(num_blocks)))


class DCNPack(nn.Module):
    """Modulated deformable 3x3 conv (DCNv2) whose offsets come from separate features.

    ``conv_offset`` maps the offset features to ``3 * G * 9`` channels (G deformable
    groups): the first ``2 * G * 9`` are the offsets, channel ``18 g + 2 k`` being the
    row shift (dy) and ``18 g + 2 k + 1`` the column shift (dx) of tap ``k = 3 i + j``
    in group ``g``; the last ``G * 9`` are mask logits (channel ``9 g + k``). This is
    the layout of ``torchvision.ops.deform_conv2d`` and of mmcv's kernel.

    Args:
        num_feat: Channel count C of input and output.
        deformable_groups: Deformable groups G; must divide ``num_feat``.

    Raises:
        ValueError: If ``deformable_groups`` does not divide ``num_feat``.
    """

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8) -> None:
        super().__init__()
        if deformable_groups < 1 or num_feat % deformable_groups:
            raise ValueError(
                f"deformable_groups ({deformable_groups}) must divide num_feat ({num_feat})"
            )
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(num_feat, num_feat, 3, 3))
        self.bias = nn.Parameter(torch.zeros(num_feat))
        self.conv_offset = StableConv2d(num_feat, 3 * deformable_groups * _KERNEL_TAPS, 3, 1, 1)
        bound = 1.0 / math.sqrt(num_feat * _KERNEL_TAPS)
        nn.init.uniform_(self.weight, -bound, bound)
        # Zero offsets and a constant mask at start: the pack begins as a plain conv.
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor, offset_feat: Tensor) -> Tensor:
        """Sample ``x`` at the offsets predicted from ``offset_feat`` and convolve.

        Args:
            x: Features to sample, shape (N, C, H, W).
            offset_feat: Features the offsets and mask are predicted from, (N, C, H, W).

        Returns:
            Output features, shape (N, C, H, W).
        """
        # in conv_offset's own type: float32 under a bfloat16 network (EDVR.offsets_in_float32)
        offset_and_mask = self.conv_offset(offset_feat.to(self.conv_offset.weight.dtype))
        num_offsets = 2 * self.deformable_groups * _KERNEL_TAPS
        offset = offset_and_mask[:, :num_offsets]
        mask = torch.sigmoid(offset_and_mask[:, num_offsets:])
        # Without autograd (inference) the fast CPU path of .deform, else torchvision's op.
        return deform_conv3x3(x, offset, mask, self.weight, self.bias, self.deformable_groups)
