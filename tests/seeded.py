"""Seeded random weights for EDVR networks (ours or the references'): every path matters.

A fresh EDVR zeroes its DCN offsets (each pack starts as a plain conv), and BasicSR's own init
shrinks activations layer after layer, so outputs barely depend on most weights. These weights
keep activations and outputs O(1) and give offsets of about a pixel (more with larger
``offset_bias_std``) with varied masks.
"""
from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

Network = TypeVar("Network", bound=nn.Module)


def seed_weights(network: Network, *, offset_bias_std: float = 1.5, offset_weight_std: float = 0.01,
                 seed: int = 0) -> Network:
    """Fill *network*'s parameters in place from ``seed``; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if ".conv_offset." in name:
                param.normal_(0.0, offset_bias_std if param.dim() == 1 else offset_weight_std, generator=generator)
            elif param.dim() == 1:
                param.normal_(0.0, 0.01, generator=generator)
            else:
                nn.init.kaiming_normal_(param, a=0.1, generator=generator)
                if name.endswith((".conv1.weight", ".conv2.weight")):  # residual blocks near identity
                    param.mul_(0.1)
    return network.eval()
