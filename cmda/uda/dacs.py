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
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmda.data import CITYSCAPES_ISR, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, ISRParams
from cmda.data.extractors import image_content_extractor, to_gray_uint8
from cmda.errors import RunError
from cmda.models.cpu_kernels import resize_bilinear
from cmda.uda.ema import EMATeacher
from cmda.uda.feature_losses import VARIANTS, FeatureContext
from cmda.uda.mix import class_mix_masks, color_jitter, gaussian_blur, mix

if TYPE_CHECKING:
    from cmda.config import UDAConfig
    from cmda.data.targets import TargetSpec

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
    logits = resize_bilinear(logits.float(), label.shape[-2:])
    loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def branch_weight(branch: str, weights: dict[str, float], second_modality: str, branches: set[str]) -> float:
    """The CE weight of one branch: `weights["second"]` for the second modality (halved when the extra ISR
    branch also exists, as the original halves its events weight then), else `weights[branch]`."""
    if branch == second_modality:
        halved = second_modality != "isr" and "isr" in branches
        return weights["second"] / 2 if halved else weights["second"]
    return weights[branch]


def branch_losses(
    logits: dict[str, Tensor],
    label: Tensor,
    weights: dict[str, float],
    second_modality: str = "events",
    weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """Weighted CE per branch (see `branch_weight`)."""
    branches = set(logits)
    return {
        branch: branch_weight(branch, weights, second_modality, branches)
        * weighted_ce(branch_logits, label, weight)
        for branch, branch_logits in logits.items()
    }


def mixed_isr_direction(jitter_draw: float) -> int:
    """The mixed ISR's shift direction (index into DIRECTIONS) from the colour-jitter draw U: twice the
    parity of U's tenths digit plus that of its hundredths digit. The original reuses the U it drew for the
    jitter decision instead of drawing a direction, so the two are coupled; kept, to draw as it does."""
    return 2 * (int(10 * jitter_draw) % 2) + int(100 * jitter_draw) % 2


def phase_loss(
    prefix: str,
    losses: dict[str, Tensor],
    terms: dict[str, tuple[Tensor, Tensor]],
    phase: str,
    iteration: int,
    logged: dict[str, Tensor],
) -> Tensor:
    """The total loss of one phase (branch CE `<prefix>_<branch>` + lambda-weighted feature terms), checked
    to be finite; the branch CEs and the raw feature terms are added to `logged`."""
    weighted = {f"{prefix}_{k}": v for k, v in losses.items()}
    weighted.update({k: term for k, (term, _) in terms.items()})
    ensure_finite(weighted, phase, iteration)
    logged.update({k: v.detach() for k, v in weighted.items() if k.startswith(f"{prefix}_")})
    logged.update({k: raw for k, (_, raw) in terms.items()})
    return sum(weighted.values())


@torch.no_grad()
def pseudo_labels(teacher_logits: Tensor, size: tuple[int, int], threshold: float) -> tuple[Tensor, Tensor]:
    """Argmax labels and ONE confidence weight for the batch: the share of pixels with max prob >= thr."""
    probs = torch.softmax(resize_bilinear(teacher_logits.float(), size), dim=1)
    confidence, label = probs.max(dim=1)
    return label, (confidence >= threshold).float().mean()


def pseudo_weight_map(weight: Tensor, shape: tuple[int, int, int], top: int, bottom: int) -> Tensor:
    """The batch's pseudo-label weight as a [B,H,W] map whose `top` first and `bottom` last rows are 0
    (the original's pseudo_weight_ignore_top/bottom: Dark Zurich's sky and ego-car rows)."""
    weights = weight.expand(shape).clone()
    if top > 0:
        weights[:, :top] = 0
    if bottom > 0:
        weights[:, -bottom:] = 0
    return weights


def ensure_finite(terms: dict[str, Tensor], phase: str, iteration: int) -> None:
    """Stop at the first non-finite term, naming it (and its phase), before its backward."""
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"loss term '{name}' ({phase} phase) is {value.item()} at iteration {iteration}; the run "
                "stops here and its last checkpoint stays (lower optim.lr or that term's lambda, or check "
                "the data of this iteration)"
            )


class NonFiniteLossError(RunError, FloatingPointError):
    """A NaN or inf loss: the run stops, its last good checkpoint stays."""


@dataclass
class StepInputs:
    """One batch on the device, with every modality the step needs (`None` where the target has none)."""

    src_image: Tensor
    src_label: Tensor
    src_isr: Tensor
    src_events: Tensor | None
    tgt_image: Tensor
    tgt_isr: Tensor
    tgt_events: Tensor | None


class DACSStep:
    """The CMDA training step around a student (`CMDASegmentor`), its EMA teacher and an optional
    motion->event translator (the frozen CycleGAN generator).

    It takes only what it uses: the UDA settings, the target's registry entry and the run's seed (each
    step's random draws come from (seed, iteration), so a resumed run draws what an uninterrupted one would).
    """

    def __init__(
        self,
        model: nn.Module,
        uda: UDAConfig,
        target: TargetSpec,
        seed: int = 0,
        translator: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.uda = uda
        self.target = target
        self.seed = seed
        self.second_modality = target.second_modality
        self.translator = translator
        self.teacher = EMATeacher(model, alpha=uda.alpha)
        loss_cfg = uda.feature_loss
        self.variant = VARIANTS[loss_cfg.variant]
        self.lambdas = self.variant.resolve_lambdas(loss_cfg.lambda_scale, loss_cfg.lambdas)
        self.loss_weights = uda.loss_weights.as_dict()
        self.second_channels = getattr(model, "second_channels", 3)
        if translator is None and self.second_modality == "events":
            log.info("no CycleGAN weights given: the raw motion image serves as the source events")

    def isr_direction(self, drawn: Tensor | int) -> Tensor | int:
        """The target's fixed ISR shift direction, or the drawn one where the target draws it."""
        fixed = self.target.fixed_isr_direction
        return drawn if fixed is None else fixed

    def prepare(self, batch: dict, device: torch.device) -> StepInputs:
        """Move a collated batch to the device and build the derived modalities there."""
        src, tgt = batch["source"], batch["target"]
        src_image = src["image"].to(device, non_blocking=True)
        tgt_image = tgt["image"].to(device, non_blocking=True)
        src_events = tgt_events = None
        if self.second_modality == "events":
            motion = src["motion"].to(device, non_blocking=True)
            with torch.no_grad():
                if self.translator is not None:
                    motion = self.translator(motion.mean(dim=1, keepdim=True))
                src_events = motion.mean(dim=1, keepdim=True).expand(-1, self.second_channels, -1, -1)
            src_events = src_events.contiguous()
            tgt_events = tgt["events"].to(device, non_blocking=True)
        if "isr" in tgt:  # the target computes its ISR in the loader (see TargetSpec.loader_isr)
            tgt_isr = tgt["isr"].to(device, non_blocking=True)
        else:
            tgt_isr = isr_of(
                tgt_image, self.target.target_isr, self.isr_direction(tgt["isr_direction"].to(device))
            )
        return StepInputs(
            src_image=src_image,
            src_label=src["label"].to(device, non_blocking=True).long(),
            src_isr=isr_of(src_image, CITYSCAPES_ISR, self.isr_direction(src["isr_direction"].to(device))),
            src_events=src_events,
            tgt_image=tgt_image,
            tgt_isr=tgt_isr,
            tgt_events=tgt_events,
        )

    def student_inputs(self, events: Tensor | None, isr: Tensor) -> dict[str, Tensor]:
        """Keyword inputs of the student beside the image: events + ISR, or the ISR alone."""
        return {"events": events, "isr": isr} if self.second_modality == "events" else {"isr": isr}

    def feature_context(self, inputs: StepInputs, source_features: dict) -> FeatureContext:
        loss_cfg = self.uda.feature_loss
        return FeatureContext(
            source=source_features,
            source_events=inputs.src_events,
            target_events=inputs.tgt_events,
            stages=loss_cfg.stages,
            reduction=loss_cfg.reduction,
            mask_source=loss_cfg.mask_source,
            second_modality=self.second_modality,
        )

    def __call__(
        self,
        batch: dict,
        iteration: int,
        device: torch.device,
        autocast,
        micro: int = 0,
        scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Run one step (both backwards; the caller steps the optimizer). Returns detached loss terms.

        With gradient accumulation the caller runs micro-batches 0..k-1 of one iteration with `scale` 1/k:
        the teacher moves once (at micro-batch 0), every micro-batch draws from its own (seed, iteration,
        micro) generator, and the backwards see the losses times `scale` (the logged values are unscaled).
        """
        cfg = self.uda
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration + micro * 2**32)
        if micro == 0:
            self.teacher.update(self.model, iteration)
        inputs = self.prepare(batch, device)
        logged: dict[str, Tensor] = {}

        # 1. source: supervised CE on every branch (+ source-phase feature terms), then backward
        with autocast():
            src_out = self.model(inputs.src_image, **self.student_inputs(inputs.src_events, inputs.src_isr))
            src_losses = branch_losses(
                src_out.logits, inputs.src_label, self.loss_weights, self.second_modality
            )
            ctx = self.feature_context(inputs, src_out.features)
            src_terms = self.variant.compute("source", ctx, self.lambdas)
        (scale * phase_loss("src", src_losses, src_terms, "source", iteration, logged)).backward()
        source_features = {k: [f.detach() for f in v] for k, v in src_out.features.items()}
        del src_out, src_losses, src_terms

        # 2. pseudo labels from the teacher's fusion branch on (night image, night events or night ISR)
        use_events = torch.rand((), generator=generator).item() < cfg.teacher_events_p
        with torch.no_grad(), autocast():
            events = self.second_modality == "events" and use_events
            night_second_modality = inputs.tgt_events if events else inputs.tgt_isr
            teacher_logits = self.teacher.model.fused_logits(inputs.tgt_image, night_second_modality)
        pseudo_label, pseudo_weight = pseudo_labels(
            teacher_logits, inputs.tgt_image.shape[-2:], cfg.pseudo_threshold
        )
        weight_map = pseudo_weight_map(
            pseudo_weight,
            tuple(pseudo_label.shape),
            cfg.pseudo_weight_ignore_top,
            cfg.pseudo_weight_ignore_bottom,
        )

        # 3. ClassMix of image / events / label, strong augmentation of the image, ISR recomputed from it
        masks = class_mix_masks(inputs.src_label, generator).to(device)
        draw_jitter, draw_blur = torch.rand(2, generator=generator).tolist()
        sigma = 0.15 + torch.rand((), generator=generator).item()
        mixed01 = mix(masks, denormalize(inputs.src_image), denormalize(inputs.tgt_image))
        if draw_jitter > 1 - cfg.color_jitter_p:  # probability color_jitter_p, U > 0.2 as in the original
            mixed01 = color_jitter(mixed01, cfg.color_jitter_strength, generator)
        if cfg.blur and draw_blur > 0.5:
            mixed01 = gaussian_blur(mixed01, sigma)
        mixed_image = normalize(mixed01)
        direction = self.isr_direction(mixed_isr_direction(draw_jitter))
        mixed_isr = image_content_extractor(to_gray_uint8(mixed01), self.target.mixed_isr, direction).expand(
            -1, self.second_channels, -1, -1
        )
        mixed_events = (
            mix(masks, inputs.src_events, inputs.tgt_events) if self.second_modality == "events" else None
        )
        mixed_label = torch.where(masks[:, 0] > 0, inputs.src_label, pseudo_label)
        mixed_weight = masks[:, 0] + (1 - masks[:, 0]) * weight_map

        # 4. mixed sample: weighted CE (+ mixed-phase feature terms), then backward
        with autocast():
            mix_out = self.model(mixed_image, **self.student_inputs(mixed_events, mixed_isr))
            mix_losses = branch_losses(
                mix_out.logits, mixed_label, self.loss_weights, self.second_modality, mixed_weight
            )
            mix_terms = {}
            if self.variant.has_mixed_terms():
                if cfg.feature_loss.target_features == "night":
                    night = self.student_inputs(inputs.tgt_events, inputs.tgt_isr)
                    target_features = self.model.encode(inputs.tgt_image, **night)
                else:
                    target_features = mix_out.features
                ctx.source, ctx.target = source_features, target_features
                mix_terms = self.variant.compute("mixed", ctx, self.lambdas)
        mixed_loss = phase_loss("mix", mix_losses, mix_terms, "mixed", iteration, logged)
        logged.update(ctx.diagnostics)  # e.g. the masked-event coverage
        (scale * mixed_loss).backward()
        logged["pseudo_weight"] = pseudo_weight.detach()
        return logged

    def weighted_terms(self, logged: dict[str, float]) -> dict[str, float]:
        """The lambda-weighted value of every feature term (what the study plotted)."""
        return {name: self.lambdas[name] * logged[name] for name in self.lambdas if name in logged}
