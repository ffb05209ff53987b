"""One CMDA self-training step (DACS, cs2dsec image+events "together"), in readable parts.

    source supervised loss (+ source-phase feature terms) -> backward
    teacher pseudo labels on the night batch (fusion branch, one confidence weight per batch)
    ClassMix of image / events / labels, jitter + blur on the mixed image, ISR recomputed from it
    mixed-sample loss (+ mixed-phase feature terms) -> backward -> one optimizer step

Modality extraction (ISR of the day, night and mixed images) runs here, batched on the training device,
instead of per sample through PIL in the loader as in the original.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmda.config import Config
from cmda.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from cmda.data.extractors import (
    CITYSCAPES_ISR,
    DSEC_ISR,
    MIXED_ISR,
    ISRParams,
    image_content_extractor,
    to_gray_uint8,
)
from cmda.uda.ema import EMATeacher
from cmda.uda.feature_losses import VARIANTS, FeatureContext
from cmda.uda.mix import class_mix_masks, color_jitter, gaussian_blur, mix

log = logging.getLogger(__name__)


def denormalize(image: Tensor) -> Tensor:
    """ImageNet-normalised [B,3,H,W] -> [0,1]."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return image * std + mean


def normalize(image01: Tensor) -> Tensor:
    mean = image01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image01 - mean) / std


def isr_of(image: Tensor, params: ISRParams, direction: Tensor | int, channels: int = 3) -> Tensor:
    """ISR of normalised images on their device: back to uint8 (rounded), grey, content extractor."""
    uint8 = (denormalize(image.float()).clamp(0, 1) * 255).round().to(torch.uint8)
    return image_content_extractor(to_gray_uint8(uint8), params, direction).expand(-1, channels, -1, -1)


def weighted_ce(logits: Tensor, label: Tensor, weight: Tensor | None = None) -> Tensor:
    """Pixel CE at label resolution, times an optional pixel weight, averaged over ALL pixels.

    Ignored pixels (255) contribute 0 but still count in the mean: the original's mmseg reduction, which
    differs from PyTorch's mean over valid pixels.
    """
    logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def branch_losses(
    logits: dict[str, Tensor], label: Tensor, weights: dict[str, float], weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Weighted CE per branch; the events weight is halved when an ISR branch exists (as the original)."""
    out = {}
    for branch, branch_logits in logits.items():
        w = weights[branch] / 2 if branch == "events" and "isr" in logits else weights[branch]
        out[branch] = w * weighted_ce(branch_logits, label, weight)
    return out


@torch.no_grad()
def pseudo_labels(teacher_logits: Tensor, size: tuple[int, int], threshold: float) -> tuple[Tensor, Tensor]:
    """Argmax labels and ONE confidence weight for the batch: the share of pixels with max prob >= thr."""
    probs = torch.softmax(
        F.interpolate(teacher_logits.float(), size=size, mode="bilinear", align_corners=False), dim=1
    )
    confidence, label = probs.max(dim=1)
    return label, (confidence >= threshold).float().mean()


def ensure_finite(losses: dict[str, Tensor], iteration: int) -> None:
    for name, value in losses.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(f"loss '{name}' is {value.item()} at iteration {iteration}")


class NonFiniteLossError(FloatingPointError):
    """A NaN or inf loss: the run stops, its last good checkpoint stays."""


@dataclass
class StepInputs:
    """One batch on the device, with every modality the step needs."""

    src_image: Tensor
    src_label: Tensor
    src_events: Tensor
    src_isr: Tensor
    tgt_image: Tensor
    tgt_events: Tensor
    tgt_isr: Tensor


class DACSStep:
    """The CMDA training step around a student (`CMDASegmentor`), its EMA teacher and an optional
    motion->event translator (the frozen CycleGAN generator)."""

    def __init__(self, model: nn.Module, config: Config, translator: nn.Module | None = None) -> None:
        self.model = model
        self.config = config
        self.translator = translator
        self.teacher = EMATeacher(model, alpha=config.uda.alpha)
        loss_cfg = config.uda.feature_loss
        self.variant = VARIANTS[loss_cfg.variant]
        self.lambdas = self.variant.resolve_lambdas(loss_cfg.weight, loss_cfg.lambdas)
        self.event_channels = getattr(model, "event_channels", 3)
        if translator is None:
            log.info("no CycleGAN weights given: the raw motion image serves as the source events")

    def prepare(self, batch: dict, device: torch.device) -> StepInputs:
        """Move a collated batch to the device and build the derived modalities there."""
        src, tgt = batch["source"], batch["target"]
        src_image = src["image"].to(device, non_blocking=True)
        tgt_image = tgt["image"].to(device, non_blocking=True)
        motion = src["motion"].to(device, non_blocking=True)
        with torch.no_grad():
            if self.translator is not None:
                motion = self.translator(motion.mean(dim=1, keepdim=True))
            src_events = motion.mean(dim=1, keepdim=True).expand(-1, self.event_channels, -1, -1)
        return StepInputs(
            src_image=src_image,
            src_label=src["label"].to(device, non_blocking=True).long(),
            src_events=src_events.contiguous(),
            src_isr=isr_of(src_image, CITYSCAPES_ISR, src["isr_direction"].to(device)),
            tgt_image=tgt_image,
            tgt_events=tgt["events"].to(device, non_blocking=True),
            tgt_isr=isr_of(tgt_image, DSEC_ISR, tgt["isr_direction"].to(device)),
        )

    def __call__(self, batch: dict, iteration: int, device: torch.device, autocast) -> dict[str, Tensor]:
        """Run one step (both backwards; the caller steps the optimizer). Returns detached loss terms."""
        cfg = self.config.uda
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + iteration)
        self.teacher.update(self.model, iteration)
        x = self.prepare(batch, device)
        logged: dict[str, Tensor] = {}

        # 1. source: supervised CE on every branch (+ source-phase feature terms), then backward
        with autocast():
            src_out = self.model(x.src_image, x.src_events, x.src_isr)
            src_losses = branch_losses(src_out.logits, x.src_label, cfg.loss_weights)
            ctx = FeatureContext(
                source=src_out.features,
                source_events=x.src_events,
                target_events=x.tgt_events,
                stages=self.config.uda.feature_loss.stages,
                reduction=self.config.uda.feature_loss.reduction,
                mask_source=self.config.uda.feature_loss.mask_source,
            )
            src_terms = self.variant.compute("source", ctx, self.lambdas)
        src_total = sum(src_losses.values()) + sum(weighted for weighted, _ in src_terms.values())
        logged.update({f"src_{k}": v.detach() for k, v in src_losses.items()})
        logged.update({k: raw for k, (_, raw) in src_terms.items()})
        ensure_finite({"source": src_total}, iteration)
        src_total.backward()
        source_features = {k: [f.detach() for f in v] for k, v in src_out.features.items()}
        del src_out, src_total

        # 2. pseudo labels from the teacher's fusion branch on (night image, night events or night ISR)
        use_events = torch.rand((), generator=generator).item() < cfg.teacher_events_p
        with torch.no_grad(), autocast():
            second = x.tgt_events if use_events else x.tgt_isr
            teacher_logits = self.teacher.model.decode(
                {"fusion": self.teacher.model.encode(x.tgt_image, second)["fusion"]}
            )["fusion"]
        pseudo_label, pseudo_weight = pseudo_labels(
            teacher_logits, x.tgt_image.shape[-2:], cfg.pseudo_threshold
        )

        # 3. ClassMix of image / events / label, strong augmentation of the image, ISR recomputed from it
        masks = class_mix_masks(x.src_label, generator).to(device)
        draw_jitter, draw_blur = torch.rand(2, generator=generator).tolist()
        sigma = 0.15 + torch.rand((), generator=generator).item()
        mixed01 = mix(masks, denormalize(x.src_image), denormalize(x.tgt_image))
        if draw_jitter > 1 - cfg.color_jitter_p:  # probability color_jitter_p, U > 0.2 as in the original
            mixed01 = color_jitter(mixed01, cfg.color_jitter_strength, generator)
        if cfg.blur and draw_blur > 0.5:
            mixed01 = gaussian_blur(mixed01, sigma)
        mixed_image = normalize(mixed01)
        direction = 2 * (int(10 * draw_jitter) % 2) + int(100 * draw_jitter) % 2
        mixed_isr = image_content_extractor(to_gray_uint8(mixed01), MIXED_ISR, direction).expand(
            -1, self.event_channels, -1, -1
        )
        mixed_events = mix(masks, x.src_events, x.tgt_events)
        mixed_label = torch.where(masks[:, 0] > 0, x.src_label, pseudo_label)
        mixed_weight = masks[:, 0] + (1 - masks[:, 0]) * pseudo_weight

        # 4. mixed sample: weighted CE (+ mixed-phase feature terms), then backward
        with autocast():
            mix_out = self.model(mixed_image, mixed_events, mixed_isr)
            mix_losses = branch_losses(mix_out.logits, mixed_label, cfg.loss_weights, mixed_weight)
            mix_terms = {}
            if self.variant.needs_target():
                if self.config.uda.feature_loss.target == "night":
                    target_features = self.model.encode(x.tgt_image, x.tgt_events)
                else:
                    target_features = mix_out.features
                ctx.source, ctx.target = source_features, target_features
                mix_terms = self.variant.compute("mixed", ctx, self.lambdas)
        mix_total = sum(mix_losses.values()) + sum(weighted for weighted, _ in mix_terms.values())
        logged.update({f"mix_{k}": v.detach() for k, v in mix_losses.items()})
        logged.update({k: raw for k, (_, raw) in mix_terms.items()})
        logged.update(ctx.diagnostics)  # e.g. the masked-event coverage
        ensure_finite({"mixed": mix_total}, iteration)
        mix_total.backward()
        logged["pseudo_weight"] = pseudo_weight.detach()
        return logged

    def weighted_terms(self, logged: dict[str, float]) -> dict[str, float]:
        """The lambda-weighted value of every feature term (what the study plotted)."""
        return {name: self.lambdas[name] * logged[name] for name in self.lambdas if name in logged}
