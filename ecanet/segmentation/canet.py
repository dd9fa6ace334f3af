"""CA-Net (Gu, Wang, Song et al., "CA-Net: Comprehensive Attention Convolutional Neural Networks for Explainable
Medical Image Segmentation", IEEE TMI 2020): a U-Net aware of the most important spatial positions, channels
and scales at once, whose attention maps explain its predictions.

The paper's Section III, as built here (the equation labels are this module's own):

- Joint spatial attention: a non-local block on the lowest scale (NL) and dual-pathway attention gates on the
  skip connections of the middle scales, gated by the decoder's coarser features (AG).
- Channel attention after each decoder concatenation (CA): the paper's own squeezes by average and max pooling
  through one MLP; any attention of this package's factory can take its place ("eca", "se", "cbam") or none.
- Scale attention (SA) over the decoder's scales, each projected to a few channels and upsampled to full
  size, weighed per scale and per pixel before the classifier.

Inputs of any size: padded to a multiple of 16 and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import create_attention

CHANNEL_ATTENTIONS = ("canet", "eca", "se", "cbam", None)
SCALE_CHANNELS = 4  # channels each decoder scale is projected to before scale attention (the authors' release)


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class NonLocal(nn.Module):
    """(NL) z_i = x_i + W_z Σ_j softmax_j(θ(x_i)ᵀ φ(x_j)) g(x_j): every position sees every other (Wang et al.,
    "Non-local neural networks", 2018, embedded Gaussian). θ, φ, g: 1×1 convolutions to C/4 channels; W_z: 1×1
    convolution and BatchNorm, the BatchNorm's scale set to zero so the block starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 4)
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        k, v = self.phi(x).flatten(2), self.g(x).flatten(2).transpose(1, 2)
        y = torch.softmax(q @ k, dim=-1) @ v  # (N, HW, C')
        return x + self.out(y.transpose(1, 2).reshape(n, -1, h, w))


class AttentionGate(nn.Module):
    """(AG, one pathway) α = σ(ψ(ReLU(W_x x + W_g ĝ))), ĝ the gating features resized to x: a weight in (0, 1)
    per position of the skip features x (additive attention, Oktay et al., "Attention U-Net", 2018)."""

    def __init__(self, channels: int, gate_channels: int) -> None:
        super().__init__()
        inner = max(1, channels // 2)
        self.wx = nn.Conv2d(channels, inner, 1, bias=False)
        self.wg = nn.Conv2d(gate_channels, inner, 1)
        self.psi = nn.Conv2d(inner, 1, 1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        g = F.interpolate(self.wg(g), size=x.shape[2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.wx(x) + g)))


class DualAttentionGate(nn.Module):
    """(AG) CA-Net's dual-pathway spatial attention: two gates in parallel, their weighted skip features
    concatenated and fused, x̂ = ReLU(BN(W_c [α₁·x, α₂·x])). Returns x̂ and the maps (N, 2, H, W)."""

    def __init__(self, channels: int, gate_channels: int) -> None:
        super().__init__()
        self.gates = nn.ModuleList(AttentionGate(channels, gate_channels) for _ in range(2))
        self.fuse = nn.Sequential(*conv_bn_relu(2 * channels, channels, k=1))

    def forward(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        maps = [gate(x, g) for gate in self.gates]
        return self.fuse(torch.cat([m * x for m in maps], 1)), torch.cat(maps, 1)


class DualPoolSE(nn.Module):
    """(CA) The paper's channel attention: β = σ(MLP(P_avg(x))) + σ(MLP(P_max(x))), one MLP (C → C/4 → C) for
    both squeezes, y = β·x; the two gates are summed as in the authors' release, so β lies in (0, 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 4)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def attention(self, x: Tensor) -> Tensor:
        """The per-channel weights, (N, C)."""
        return torch.sigmoid(self.mlp(x.mean((2, 3)))) + torch.sigmoid(self.mlp(x.amax((2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)[:, :, None, None]


def channel_attention(name: str | None, channels: int) -> nn.Module | None:
    return DualPoolSE(channels) if name == "canet" else create_attention(name, channels)


class DecoderBlock(nn.Module):
    """A decoder stage after a concatenation: conv-BN-ReLU (C_in → C), conv-BN (C → 2C), channel attention,
    plus the input through a 1×1 projection, ReLU, conv-BN-ReLU (2C → C), as the authors' release builds it."""

    def __init__(self, cin: int, cout: int, attention: str | None) -> None:
        super().__init__()
        self.branch = nn.Sequential(*conv_bn_relu(cin, cout), nn.Conv2d(cout, 2 * cout, 3, padding=1, bias=False))
        self.branch.append(nn.BatchNorm2d(2 * cout))
        self.attention = channel_attention(attention, 2 * cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, 2 * cout, 1, bias=False), nn.BatchNorm2d(2 * cout))
        self.out = nn.Sequential(*conv_bn_relu(2 * cout, cout))

    def forward(self, x: Tensor, record: bool = False) -> tuple[Tensor, Tensor | None]:
        """The stage's output and, with ``record``, the attention's channel weights (N, 2C)."""
        f = self.branch(x)
        weights = self.attention.attention(f) if record and self.attention is not None else None
        if self.attention is not None:
            f = self.attention(f)
        return self.out(F.relu(f + self.shortcut(x))), weights


class ScaleAttention(nn.Module):
    """(SA) F: S decoder scales of ``SCALE_CHANNELS`` channels each, at full size (S·4 channels).
    γ = σ(mean over each scale's channels of MLP(P_avg(F)) + MLP(P_max(F))): one weight per scale (N, S);
    γ* = σ(W₂ ReLU(BN(W₁ (γ·F)))): one weight per scale and pixel (N, S, H, W);
    Y = γ·γ*·F + F, then conv-BN-ReLU to ``SCALE_CHANNELS`` channels for the classifier."""

    def __init__(self, scales: int) -> None:
        super().__init__()
        c = scales * SCALE_CHANNELS
        self.scales = scales
        self.mlp = nn.Sequential(nn.Linear(c, c // 4), nn.ReLU(inplace=True), nn.Linear(c // 4, c))
        self.spatial = nn.Sequential(*conv_bn_relu(c, scales), nn.Conv2d(scales, scales, 1))
        self.out = nn.Sequential(*conv_bn_relu(c, SCALE_CHANNELS))

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n, _, h, w = f.shape
        raw = self.mlp(f.mean((2, 3))) + self.mlp(f.amax((2, 3)))
        gamma = torch.sigmoid(raw.view(n, self.scales, SCALE_CHANNELS).mean(2))  # (N, S)
        per_scale = gamma.repeat_interleave(SCALE_CHANNELS, 1)[:, :, None, None]
        pixel = torch.sigmoid(self.spatial(f * per_scale))  # (N, S, H, W)
        y = f * per_scale * pixel.repeat_interleave(SCALE_CHANNELS, 1) + f
        return self.out(y), gamma, pixel


class CANet(nn.Module):
    """CA-Net: a five-level U-Net encoder (widths ``width``·1, 2, 4, 8, 16), a non-local block on the lowest
    scale, dual attention gates on the skips of levels 2 and 3, channel attention in each of the four decoder
    stages, scale attention over the finest ``scales`` decoder scales, a 1×1 classifier. Without
    ``spatial_attention``, ``scale_attention`` and channel attention it is the U-Net of the same width (the
    classifier then reads the finest decoder stage).

    ``forward(x, return_attention=True)`` also returns ``"attention"``: ``spatial`` {level: (N, 2, H/2^(l-1),
    W/2^(l-1))} the gates' maps, ``channel`` {stage: (N, 2·C_stage)} (empty without channel attention),
    ``scale`` (N, S) per-scale weights and ``scale_pixel`` (N, S, H, W) per-pixel weights, scales ordered from
    the finest (absent without scale attention)."""

    def __init__(
        self, num_classes: int = 2, in_chans: int = 3, channel_attention: str | None = "canet", width: int = 16,
        scales: int = 4, spatial_attention: bool = True, scale_attention: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        channel_attention = None if channel_attention == "none" else channel_attention
        if channel_attention not in CHANNEL_ATTENTIONS:
            raise ValueError(f"--channel-attention: unknown {channel_attention!r}; choose one of {CHANNEL_ATTENTIONS}")
        if not isinstance(width, int) or width < 4:
            raise ValueError(f"--width: CA-Net's base width must be an integer of at least 4, got {width!r}")
        if scales not in (1, 2, 3, 4):
            raise ValueError(f"--scales: CA-Net weighs 1 to 4 decoder scales, got {scales!r}")
        c = [width * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout)) for cin, cout in zip([in_chans, *c], c)
        )
        self.nonlocal_block = NonLocal(c[4]) if spatial_attention else nn.Identity()
        gates = {"3": DualAttentionGate(c[2], c[3]), "2": DualAttentionGate(c[1], c[2])} if spatial_attention else {}
        self.gates = nn.ModuleDict(gates)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(4))
        self.decoder = nn.ModuleList(DecoderBlock(2 * c[i], c[i], channel_attention) for i in range(4))
        if scale_attention:
            self.project = nn.ModuleList(nn.Conv2d(c[i], SCALE_CHANNELS, 1) for i in range(scales))
            self.scale_attention = ScaleAttention(scales)
        else:
            self.project, self.scale_attention = None, None
        self.classifier = nn.Conv2d(SCALE_CHANNELS if scale_attention else c[0], num_classes, 1)

    def forward(self, x: Tensor, return_attention: bool = False) -> dict:
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % 16, 0, -h % 16))  # four poolings: sides a multiple of 16
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        d = self.nonlocal_block(skips[4])
        decoded, spatial, channel = [], {}, {}
        for i in (3, 2, 1, 0):  # level i + 1, gated by the coarser decoder features d
            skip = skips[i]
            if str(i + 1) in self.gates:
                skip, spatial[i + 1] = self.gates[str(i + 1)](skip, d)
            d, weights = self.decoder[i](torch.cat([skip, self.up[i](d)], 1), record=return_attention)
            if weights is not None:
                channel[i + 1] = weights
            decoded.insert(0, d)
        attention: dict = {"channel": channel}
        if self.scale_attention is None:
            y = decoded[0]
        else:
            size = decoded[0].shape[2:]
            up = [
                F.interpolate(p(s), size=size, mode="bilinear", align_corners=False)
                for p, s in zip(self.project, decoded)
            ]
            y, attention["scale"], pixel = self.scale_attention(torch.cat(up, 1))
            attention["scale_pixel"] = pixel[:, :, :h, :w]
        out = {"out": self.classifier(y)[:, :, :h, :w]}
        if return_attention:
            crop = {lv: (-(-h // 2 ** (lv - 1)), -(-w // 2 ** (lv - 1))) for lv in spatial}
            attention["spatial"] = {lv: m[:, :, : crop[lv][0], : crop[lv][1]] for lv, m in spatial.items()}
            out["attention"] = attention
        return out
