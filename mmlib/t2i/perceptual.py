"""The perceptual distance of 07's VQGAN first stage (LPIPS-style, on a frozen ImageNet network).

``Perceptual`` measures distances between normalised feature maps of the offline ImageNet CNN
(``mmlib.pretrained.cnn``; smoke/cpu, where no VGG weights exist offline); ``LPIPSDistance`` is the
original LPIPS-VGG (paper); ``perceptual_for(profile)`` picks the one a profile trains with.
"""
from __future__ import annotations

import lpips
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights

from .. import pretrained, profiles

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _find(module: nn.Module, attr: str) -> nn.Module | None:
    for m in module.modules():
        if hasattr(m, attr):
            return m
    return None


class Perceptual(nn.Module):
    """LPIPS-style distance with uniform layer weights (Zhang et al. 2018, https://arxiv.org/abs/1801.03924):

        P(x, y) = Σ_l mean_hw ‖ f̂_l(x) - f̂_l(y) ‖²,   f̂ = f / ‖f‖ over channels

    on the feature maps of a frozen ImageNet network taken at several depths (strides 2–16), so that
    small images still have spatial feature maps. ``net`` is what ``mmlib.pretrained.cnn`` returns
    (EfficientNet-Lite0 offline / ResNet-18); stages are found by attribute names.
    """

    def __init__(self, net: nn.Module, min_size: int = 64):
        super().__init__()
        self.min_size = min_size  # smaller inputs are upsampled first (deep maps of tiny images are 1×1)
        eff, res = _find(net, "_blocks"), _find(net, "layer4")
        if eff is not None:
            self.kind, self.net = "efficientnet", eff
        elif res is not None:
            self.kind, self.net = "resnet", res
        else:
            raise TypeError(f"no EfficientNet (_blocks) or ResNet (layer4) inside {type(net).__name__}")
        self.net.eval().requires_grad_(False)
        # the normalisation the network was trained with (FeatureGrid carries it), else ImageNet's
        mean = getattr(net, "mean", torch.tensor(_IMAGENET_MEAN)).reshape(1, 3, 1, 1).clone()
        std = getattr(net, "std", torch.tensor(_IMAGENET_STD)).reshape(1, 3, 1, 1).clone()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True):  # frozen BatchNorms stay in eval mode
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std                 # [-1, 1] -> ImageNet normalised
        if x.shape[-1] < self.min_size:
            x = F.interpolate(x, size=self.min_size, mode="bilinear", align_corners=False)
        n = self.net
        out = []
        if self.kind == "efficientnet":
            x = n._swish(n._bn0(n._conv_stem(x)))
            out.append(x)
            for i, block in enumerate(n._blocks):
                prev = x
                x = block(x)
                if x.shape[-1] != prev.shape[-1] and i > 0:   # a new stage begins: keep the last map of the previous
                    out.append(prev)
            out.append(x)
        else:
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
                x = layer(x)
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (B,) distances
        d = 0.0
        for fx, fy in zip(self.features(x), self.features(y)):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            d = d + (fx - fy).pow(2).sum(1).mean((1, 2))
        return d


# torchvision VGG-16 ``features`` indices of LPIPS's five slices (lpips/pretrained_networks.py)
_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def vgg_slices_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision VGG-16 state dict as LPIPS's ``slice1``..``slice5`` (``features.i.*`` -> ``sliceK.i.*``)."""
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            i = int(key.split(".")[1])
            k = next(n for n, (lo, hi) in enumerate(_VGG_SLICES, 1) if lo <= i < hi)
            out[f"slice{k}.{key[len('features.'):]}"] = value
    return out


class LPIPSDistance(nn.Module):
    """LPIPS-VGG (Zhang et al. 2018), the study's perceptual term (paper profile): the ``lpips`` package's
    learned layer weights (shipped inside it) on torchvision's ImageNet VGG-16, read like every paper
    weight through ``pretrained.hub_source("vgg16/IMAGENET1K_V1", ".pth")`` (a state-dict file), else
    torchvision's download."""

    def __init__(self):
        super().__init__()
        src = pretrained.hub_source("vgg16/IMAGENET1K_V1", ".pth")
        state = (torch.load(src, map_location="cpu", weights_only=True) if src.endswith(".pth")
                 else VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
        self.lpips = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)   # VGG built empty, filled below
        self.lpips.net.load_state_dict(vgg_slices_state(state), strict=True)
        self.lpips.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).flatten()


def perceptual_for(profile: str) -> tuple[nn.Module | None, str]:
    """(distance module, its name): LPIPS-VGG in paper when available, else the offline CNN's features
    at the profile's ``vq.perceptual_size``; ``(None, "none ...")`` where the profile's weight is 0."""
    setup = profiles.get(profile)
    vq = setup.latent_diffusion.vq
    if vq.perceptual_weight == 0:
        return None, "none (perceptual_weight 0)"
    if setup.weights == "hub":
        return LPIPSDistance(), "LPIPS-VGG"

    net = pretrained.cnn(profile)
    size = vq.perceptual_size
    return Perceptual(net, min_size=size), f"{getattr(net, 'name', type(net).__name__)} feature distance @{size}px"
