"""Frozen CycleGAN ResNet generator that turns day "image change" maps into night-event-like frames.

CMDA feeds the source image-motion map (IC1) through this generator to obtain pseudo events for Cityscapes.
Our Sequential reproduces the pix2pix ``ResnetGenerator`` layer order exactly (``model.N`` indices, residual
blocks' ``conv_block.M``), so the released ``cityscapes_ICD_to_dsec_EN.pth`` loads with ``strict=True``.
Layout: ReflPad3, Conv7 (idx 1), IN, ReLU, 2x [Conv3 s2, IN, ReLU] (idx 4, 7), 9 ResBlocks (idx 10..18),
2x [ConvT3 s2, IN, ReLU] (idx 19, 22), ReflPad3, Conv7 (idx 26), Tanh.
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from cmda.models.weights import load_strict, read_state_dict


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + [ReflPad1, Conv3, IN, ReLU, ReflPad1, Conv3, IN](x); no dropout (CMDA's generator has none)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=True),
            _instance_norm(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=True),
            _instance_norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """ResNet-9-block generator with two stride-2 downsamplings; output in [-1, 1] (tanh), same size as input.

    Input height and width should be multiples of 4 so the transposed convs restore the exact size.
    """

    def __init__(self, input_nc: int = 1, output_nc: int = 1, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=True),
            _instance_norm(ngf),
            nn.ReLU(True),
        ]
        for factor in (1, 2):
            channels = ngf * factor
            layers += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=True),
                _instance_norm(channels * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for factor in (4, 2):
            channels = ngf * factor
            layers += [
                nn.ConvTranspose2d(
                    channels, channels // 2, 3, stride=2, padding=1, output_padding=1, bias=True
                ),
                _instance_norm(channels // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


TRANSLATOR_HINT = (
    "Get cityscapes_ICD_to_dsec_EN.pth from the CMDA authors' release (XiaRho/CMDA README), put it into "
    "pretrained/, see pretrained/README.md; or set model.cyclegan: none."
)


def frozen(generator: ResnetGenerator) -> ResnetGenerator:
    """Eval mode and ``requires_grad=False`` everywhere: the translator is a fixed tool, never trained."""
    generator.eval()
    generator.requires_grad_(False)
    return generator


def load_event_translator(path: str | os.PathLike[str]) -> ResnetGenerator:
    """Build the generator, then load the CMDA authors' weights (optional ``module.`` prefix) strictly."""
    generator = ResnetGenerator()
    load_strict(generator, read_state_dict(path, TRANSLATOR_HINT), path)
    return frozen(generator)
