"""EDVR: video restoration with enhanced deformable convolutional networks.

Module and attribute names reproduce BasicSR's ``EDVR`` state-dict keys exactly (the
canonical layout of this package); the arithmetic follows BasicSR 1.4.2 / mmedit 0.16.1.
The forward pass is split so that per-frame features can be computed once per input
frame and reused by every window that contains the frame.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import DCNPack, ResidualBlockNoBN, make_layer
from .stable import StableConv2d, channel_dot, stable_sigmoid, upsample_bilinear

FrameFeatures = tuple[Tensor, Tensor, Tensor]
"""Pyramid of one frame: L1 (N, C, h, w), L2 (N, C, h/2, w/2), L3 (N, C, h/4, w/4)."""

_HR_FEAT = 64  # channel count after the second pixel shuffle, fixed in every EDVR variant


def _lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.1) in place; only applied to freshly computed tensors."""
    return F.leaky_relu(x, 0.1, inplace=True)


def _up2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling, align_corners=False."""
    return upsample_bilinear(x, 2)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return StableConv2d(in_ch, out_ch, 3, stride, 1)


def _conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return StableConv2d(in_ch, out_ch, 1)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the last two dimensions on the bottom/right up to multiples of ``multiple``.

    Reflection padding is used because mirrored content continues edges and textures
    most plausibly, which matters since the last rows/columns of the cropped output
    still see the padded area through the network's receptive field. Reflection needs
    each pad amount to be smaller than the dimension; tiny frames where it is not fall
    back to replicating the last row/column.

    Args:
        x: Tensor of shape (..., H, W), at least 2-D.
        multiple: Target multiple for H and W.

    Returns:
        Tensor of shape (..., ceil(H / multiple) * multiple, ceil(W / multiple) * multiple);
        ``x`` itself (same object) when no padding is needed.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    # F.pad's reflect/replicate modes want a (batch, H, W)-like input.
    flat = x.reshape(-1, height, width)
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*x.shape[:-2], height + pad_h, width + pad_w)


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment of one frame's features to the centre's.

    Args:
        num_feat: Channel count C.
        deformable_groups: Deformable groups of every DCN pack.
    """

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8) -> None:
        super().__init__()
        # Registration order fixes the state-dict order: each dict holds l3, l2, l1.
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for level in ("l3", "l2", "l1"):
            is_coarsest = level == "l3"
            self.offset_conv1[level] = _conv3x3(2 * num_feat, num_feat)
            self.offset_conv2[level] = _conv3x3((1 if is_coarsest else 2) * num_feat, num_feat)
            if not is_coarsest:
                self.offset_conv3[level] = _conv3x3(num_feat, num_feat)
            self.dcn_pack[level] = DCNPack(num_feat, deformable_groups)
            if not is_coarsest:
                self.feat_conv[level] = _conv3x3(2 * num_feat, num_feat)
        self.cas_offset_conv1 = _conv3x3(2 * num_feat, num_feat)
        self.cas_offset_conv2 = _conv3x3(num_feat, num_feat)
        self.cas_dcnpack = DCNPack(num_feat, deformable_groups)

    def forward(self, nbr: Sequence[Tensor], ref: Sequence[Tensor]) -> Tensor:
        """Align a neighbour frame to the reference (centre) frame.

        Args:
            nbr: Neighbour pyramid (L1, L2, L3), shapes (N, C, h, w), (N, C, h/2, w/2),
                (N, C, h/4, w/4).
            ref: Reference pyramid, same shapes.

        Returns:
            Aligned L1 features, shape (N, C, h, w).
        """
        up_offset: Tensor | None = None
        up_feat: Tensor | None = None
        for index in (2, 1, 0):
            level = f"l{index + 1}"
            offset = _lrelu(self.offset_conv1[level](torch.cat([nbr[index], ref[index]], dim=1)))
            if up_offset is None:
                offset = _lrelu(self.offset_conv2[level](offset))
            else:
                offset = _lrelu(self.offset_conv2[level](torch.cat([offset, up_offset], dim=1)))
                offset = _lrelu(self.offset_conv3[level](offset))
            feat = self.dcn_pack[level](nbr[index], offset)
            if up_feat is not None:
                feat = self.feat_conv[level](torch.cat([feat, up_feat], dim=1))
            if index > 0:  # L1's feat_conv output stays linear
                feat = _lrelu(feat)
                # Offset features feed the finer level's offsets, which are in pixels
                # of a grid twice as fine, hence the x2.
                up_offset = _up2(offset) * 2
                up_feat = _up2(feat)
        offset = _lrelu(self.cas_offset_conv1(torch.cat([feat, ref[0]], dim=1)))
        offset = _lrelu(self.cas_offset_conv2(offset))
        return _lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and spatial attention fusion of the aligned frames.

    Args:
        num_feat: Channel count C.
        num_frame: Frames T per window.
        center_frame_idx: Index of the centre (reference) frame.
    """

    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2) -> None:
        super().__init__()
        self.center_frame_idx = center_frame_idx
        self.temporal_attn1 = _conv3x3(num_feat, num_feat)
        self.temporal_attn2 = _conv3x3(num_feat, num_feat)
        self.feat_fusion = _conv1x1(num_frame * num_feat, num_feat)
        self.spatial_attn1 = _conv1x1(num_frame * num_feat, num_feat)
        self.spatial_attn2 = _conv1x1(2 * num_feat, num_feat)
        self.spatial_attn3 = _conv3x3(num_feat, num_feat)
        self.spatial_attn4 = _conv1x1(num_feat, num_feat)
        self.spatial_attn5 = _conv3x3(num_feat, num_feat)
        self.spatial_attn_l1 = _conv1x1(num_feat, num_feat)
        self.spatial_attn_l2 = _conv3x3(2 * num_feat, num_feat)
        self.spatial_attn_l3 = _conv3x3(num_feat, num_feat)
        self.spatial_attn_add1 = _conv1x1(num_feat, num_feat)
        self.spatial_attn_add2 = _conv1x1(num_feat, num_feat)

    @staticmethod
    def _max_avg_pool(x: Tensor) -> Tensor:
        """3x3/stride-2 max and average pools (avg counts the zero padding), concatenated."""
        return torch.cat(
            [F.max_pool2d(x, 3, stride=2, padding=1), F.avg_pool2d(x, 3, stride=2, padding=1)],
            dim=1,
        )

    def forward(self, aligned: Tensor) -> Tensor:
        """Fuse the aligned frames.

        Args:
            aligned: Aligned features, shape (N, T, C, h, w).

        Returns:
            Fused features, shape (N, C, h, w).
        """
        n, t, c, h, w = aligned.shape
        # Temporal attention: per-pixel similarity of every frame to the centre frame.
        embedding_ref = self.temporal_attn1(aligned[:, self.center_frame_idx])
        embedding = self.temporal_attn2(aligned.reshape(n * t, c, h, w)).view(n, t, c, h, w)
        similarity = channel_dot(embedding, embedding_ref.unsqueeze(1), dim=2)  # (N, T, h, w)
        correlation = stable_sigmoid(similarity)
        weighted = (aligned * correlation.unsqueeze(2)).view(n, t * c, h, w)

        feat = _lrelu(self.feat_fusion(weighted))

        # Spatial attention on a two-level pyramid (h/2 and h/4).
        attn = _lrelu(self.spatial_attn1(weighted))
        attn = _lrelu(self.spatial_attn2(self._max_avg_pool(attn)))
        attn_level = _lrelu(self.spatial_attn_l1(attn))
        attn_level = _lrelu(self.spatial_attn_l2(self._max_avg_pool(attn_level)))
        attn_level = _up2(_lrelu(self.spatial_attn_l3(attn_level)))
        attn = _lrelu(self.spatial_attn3(attn)) + attn_level
        attn = _up2(_lrelu(self.spatial_attn4(attn)))
        attn = self.spatial_attn5(attn)
        attn_add = self.spatial_attn_add2(_lrelu(self.spatial_attn_add1(attn)))
        return feat * stable_sigmoid(attn) * 2 + attn_add


class PredeblurModule(nn.Module):
    """Pre-deblurring feature extractor of BasicSR's deblur variants.

    Args:
        num_in_ch: Input image channels.
        num_feat: Channel count C.
        hr_in: Whether the input is high resolution; two stride-2 convs then bring it
            down by 4 first.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, hr_in: bool = False) -> None:
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = _conv3x3(num_in_ch, num_feat)
        if hr_in:
            self.stride_conv_hr1 = _conv3x3(num_feat, num_feat, stride=2)
            self.stride_conv_hr2 = _conv3x3(num_feat, num_feat, stride=2)
        self.stride_conv_l2 = _conv3x3(num_feat, num_feat, stride=2)
        self.stride_conv_l3 = _conv3x3(num_feat, num_feat, stride=2)
        self.resblock_l3 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_1 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_2 = ResidualBlockNoBN(num_feat)
        self.resblock_l1 = nn.ModuleList(ResidualBlockNoBN(num_feat) for _ in range(5))

    def forward(self, x: Tensor) -> Tensor:
        """Extract deblurred features.

        Args:
            x: Frames, shape (N, num_in_ch, H, W); H, W multiples of 4 (16 when hr_in).

        Returns:
            Features, shape (N, C, H, W), or (N, C, H/4, W/4) when hr_in.
        """
        feat_l1 = _lrelu(self.conv_first(x))
        if self.hr_in:
            feat_l1 = _lrelu(self.stride_conv_hr1(feat_l1))
            feat_l1 = _lrelu(self.stride_conv_hr2(feat_l1))
        feat_l2 = _lrelu(self.stride_conv_l2(feat_l1))
        feat_l3 = _lrelu(self.stride_conv_l3(feat_l2))

        feat_l3 = _up2(self.resblock_l3(feat_l3))
        feat_l2 = _up2(self.resblock_l2_2(self.resblock_l2_1(feat_l2) + feat_l3))
        feat_l1 = self.resblock_l1[1](self.resblock_l1[0](feat_l1)) + feat_l2
        for block in self.resblock_l1[2:]:
            feat_l1 = block(feat_l1)
        return feat_l1


class EDVR(nn.Module):
    """EDVR network (all BasicSR/mmedit variants), split into per-frame and per-window parts.

    Args:
        num_in_ch: Input image channels.
        num_out_ch: Output image channels; must equal ``num_in_ch`` (the output is a
            residual over the centre frame).
        num_feat: Channel count C of the features.
        num_frame: Frames T per window.
        deformable_groups: Deformable groups of the DCN packs.
        num_extract_block: Residual blocks of the per-frame feature extraction.
        num_reconstruct_block: Residual blocks of the reconstruction.
        center_frame_idx: Index of the restored frame in the window; ``num_frame // 2``
            when None.
        hr_in: Input already at output resolution (scale 1, deblur variants).
        with_predeblur: Use the pre-deblur module instead of ``conv_first``.
        with_tsa: Fuse with TSA attention; otherwise with one 1x1 conv.

    Attributes:
        scale: Output/input size ratio (4, or 1 when hr_in).
        num_frames: T.
        center: Index of the centre frame.
        size_multiple: H and W given to ``frame_features`` must be multiples of this.

    Raises:
        ValueError: On inconsistent arguments.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_frame: int = 5,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
        num_reconstruct_block: int = 10,
        center_frame_idx: int | None = None,
        hr_in: bool = False,
        with_predeblur: bool = False,
        with_tsa: bool = True,
    ) -> None:
        super().__init__()
        if num_out_ch != num_in_ch:
            raise ValueError(f"num_out_ch ({num_out_ch}) must equal num_in_ch ({num_in_ch})")
        if num_frame < 1:
            raise ValueError(f"num_frame must be >= 1, got {num_frame}")
        center = num_frame // 2 if center_frame_idx is None else center_frame_idx
        if not 0 <= center < num_frame:
            raise ValueError(f"center_frame_idx {center} is outside 0..{num_frame - 1}")
        self.num_frames = num_frame
        self.center = center
        self.hr_in = hr_in
        self.with_predeblur = with_predeblur
        self.with_tsa = with_tsa
        self.scale = 1 if hr_in else 4
        self.size_multiple = 16 if hr_in else 4

        if with_predeblur:
            self.predeblur = PredeblurModule(num_in_ch, num_feat, hr_in)
            self.conv_1x1 = _conv1x1(num_feat, num_feat)
        else:
            self.conv_first = _conv3x3(num_in_ch, num_feat)
        self.feature_extraction = make_layer(
            ResidualBlockNoBN, num_extract_block, num_feat=num_feat
        )
        self.conv_l2_1 = _conv3x3(num_feat, num_feat, stride=2)
        self.conv_l2_2 = _conv3x3(num_feat, num_feat)
        self.conv_l3_1 = _conv3x3(num_feat, num_feat, stride=2)
        self.conv_l3_2 = _conv3x3(num_feat, num_feat)

        self.pcd_align = PCDAlignment(num_feat, deformable_groups)
        self.fusion: nn.Module
        if with_tsa:
            self.fusion = TSAFusion(num_feat, num_frame, center)
        else:
            self.fusion = _conv1x1(num_frame * num_feat, num_feat)

        self.reconstruction = make_layer(
            ResidualBlockNoBN, num_reconstruct_block, num_feat=num_feat
        )
        self.upconv1 = _conv3x3(num_feat, 4 * num_feat)
        self.upconv2 = _conv3x3(num_feat, 4 * _HR_FEAT)
        self.conv_hr = _conv3x3(_HR_FEAT, _HR_FEAT)
        self.conv_last = _conv3x3(_HR_FEAT, num_out_ch)

    def frame_features(self, frame: Tensor) -> FrameFeatures:
        """Compute the feature pyramid of one frame (the part that depends on it alone).

        Args:
            frame: Frame(s), shape (N, num_in_ch, H, W); H, W multiples of ``size_multiple``.

        Returns:
            (L1, L2, L3) with shapes (N, C, h, w), (N, C, h/2, w/2), (N, C, h/4, w/4),
            where (h, w) = (H, W), or (H/4, W/4) when hr_in.

        Raises:
            ValueError: If H or W is not a multiple of ``size_multiple``.
        """
        height, width = frame.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of {self.size_multiple}; "
                "pad it (pad_to_multiple) or use forward()"
            )
        if self.with_predeblur:
            feat_l1 = self.conv_1x1(self.predeblur(frame))
        else:
            feat_l1 = _lrelu(self.conv_first(frame))
        feat_l1 = self.feature_extraction(feat_l1)
        feat_l2 = _lrelu(self.conv_l2_2(_lrelu(self.conv_l2_1(feat_l1))))
        feat_l3 = _lrelu(self.conv_l3_2(_lrelu(self.conv_l3_1(feat_l2))))
        return feat_l1, feat_l2, feat_l3

    def offsets_in_float32(self) -> EDVR:
        """Keeps every deformable convolution's offset convolution in float32 (call it after
        ``.to(torch.bfloat16)``): bfloat16's 8-bit mantissa holds a 30 px offset to 0.125 px and a
        100 px one to 0.5 px, losing the sub-pixel alignment the deformable convolution computes in
        float32. The offsets and masks are then float32; the features stay in the network's type."""
        for module in self.modules():
            if isinstance(module, DCNPack):
                module.conv_offset.float()
        return self

    def compile_regions(self, enable: bool = True, **options: Any) -> None:
        """``torch.compile`` the alignment, the fusion and the reconstruction in place (or undo it).

        Regional compilation: the alignment runs once per window frame with the same shapes, so
        compiling it as one region compiles it once, where compiling ``restore_window`` whole
        unrolls it ``num_frames`` times into one large graph (measured on the CPU: 2-3x longer to
        compile). ``options`` go to ``torch.compile``.
        """
        for module in (self.pcd_align, self.fusion, self.reconstruction):
            if enable:
                module.compile(**options)
            else:
                module._compiled_call_impl = None  # what nn.Module.compile sets; no public undo exists

    def restore_window(self, features: Sequence[FrameFeatures], center_frame: Tensor) -> Tensor:
        """Restore the centre frame of a window from its frames' feature pyramids.

        Args:
            features: ``num_frames`` pyramids from ``frame_features``, in window order.
            center_frame: The window's centre frame, shape (N, num_in_ch, H, W).

        Returns:
            Restored centre frame, shape (N, num_out_ch, scale * H, scale * W), in float32 or wider:
            the bilinear base of ``center_frame`` is added in float32 at least, so pass the centre
            frame unrounded (a half-precision network takes it in any type).

        Raises:
            ValueError: If ``features`` does not hold ``num_frames`` pyramids.
        """
        if len(features) != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frame features, got {len(features)}")
        ref = features[self.center]
        # Every frame, the centre one included, is aligned to the centre: (N, T, C, h, w). The centre
        # goes in as views of its pyramid rather than the same tensors: a compiled pcd_align would
        # otherwise guard on its two inputs being one object and compile the centre a graph of its own.
        own = tuple(level.view(level.shape) for level in ref)
        aligned = torch.stack([self.pcd_align(own if nbr is ref else nbr, ref) for nbr in features], dim=1)
        if self.with_tsa:
            fused = self.fusion(aligned)
        else:
            fused = self.fusion(aligned.flatten(1, 2))

        out = self.reconstruction(fused)
        out = _lrelu(F.pixel_shuffle(self.upconv1(out), 2))
        out = _lrelu(F.pixel_shuffle(self.upconv2(out), 2))
        out = _lrelu(self.conv_hr(out))
        out = self.conv_last(out)
        # the base and the sum in float32: in half precision the base alone rounds every output sample
        # (bfloat16 to 1/256 near 1.0); a half-precision network's result is therefore float32
        wide = torch.promote_types(torch.promote_types(out.dtype, center_frame.dtype), torch.float32)
        base = center_frame.to(wide)
        if not self.hr_in:
            base = upsample_bilinear(base, 4)
        return out.to(wide) + base

    def forward(self, x: Tensor) -> Tensor:
        """Restore the centre frame of each window; any H, W >= 1.

        Sizes that are not multiples of ``size_multiple`` are padded on the bottom/right
        with ``pad_to_multiple`` and the output cropped back; other sizes are not padded.

        Args:
            x: Windows, shape (N, T, num_in_ch, H, W) with T = ``num_frames``.

        Returns:
            Restored centre frames, shape (N, num_out_ch, scale * H, scale * W).

        Raises:
            ValueError: If ``x`` is not 5-D or T differs from ``num_frames``.
        """
        if x.dim() != 5 or x.shape[1] != self.num_frames:
            raise ValueError(
                f"expected input (N, {self.num_frames}, C, H, W), got {tuple(x.shape)}"
            )
        n, t, _, height, width = x.shape
        padded = pad_to_multiple(x, self.size_multiple)
        pyramid = self.frame_features(padded.flatten(0, 1))
        feat_l1, feat_l2, feat_l3 = (level.unflatten(0, (n, t)) for level in pyramid)
        features = [(feat_l1[:, i], feat_l2[:, i], feat_l3[:, i]) for i in range(t)]
        out = self.restore_window(features, padded[:, self.center])
        if padded is not x:
            out = out[..., : self.scale * height, : self.scale * width]
        return out
