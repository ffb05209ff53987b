"""The feature-alignment loss variants of the L2 study, as one registry picked by config.

The study (the public fork Giog97/CMDA, files mmseg/models/uda/dacs_*.py) kept one copy of the training
step per variant. Here a variant is one `VARIANTS` entry: the names of its terms, each term's default
lambda, the phase it joins (the source loss before the source backward, or the mixed loss) and the
function that computes it from the step's features. Adding a variant is adding one entry.

Faithful defaults (what the study's code does):
- features are the STUDENT's, from the LAST MiT stage only (index 3), compared with a plain mean squared
  error over all elements; no pooling, no normalisation;
- "source" = the student's features of the day batch (image, pseudo-events, ISR); "target" = the student's
  features of the ClassMix-MIXED batch (the study has no pure-night student pass);
- cross-domain terms detach the source side (its graph is already freed by the source backward) and join
  the mixed loss; the source-only term `rgb_event_src` detaches nothing and joins the source loss.

Options that never change those defaults: `stages` (mean over several stages), `reduction: stats`
(MSE between per-channel spatial means plus MSE between per-channel spatial variances: distribution
alignment instead of a pixel-wise pull between unrelated images), `target_features: night` (an extra
student pass on the pure night batch supplies the target features).

"EVENT" terms compare the features of the second backbone, i.e. of the target's second modality (events
on DSEC-Night, the image's ISR on Dark Zurich: `FeatureContext.second`). A term that needs something only
some targets provide declares it in `Term.requires`; the config refuses such a variant on a target without
it, naming both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

Features = dict[str, list[Tensor]]


@dataclass
class FeatureContext:
    """What a term may look at: source and target feature dicts (branch -> 4 stage maps) and the inputs'
    event tensors (for masks). Target features are None in the source phase."""

    source: Features
    target: Features | None = None
    source_events: Tensor | None = None
    target_events: Tensor | None = None
    stages: Sequence[int] = (3,)
    reduction: str = "mse"
    mask_source: str = "source"
    second: str = "events"
    """Feature key of the second modality ("events" or "isr"): what the EVENT terms compare."""


def stage_distance(a: Tensor, b: Tensor, reduction: str) -> Tensor:
    """Distance between two feature maps [B,C,H,W]: element-mean MSE, or MSE of channel statistics."""
    if reduction == "mse":
        return F.mse_loss(a, b)
    if reduction == "stats":
        mean_a, mean_b = a.mean(dim=(2, 3)), b.mean(dim=(2, 3))
        var_a, var_b = a.var(dim=(2, 3), unbiased=False), b.var(dim=(2, 3), unbiased=False)
        return F.mse_loss(mean_a, mean_b) + F.mse_loss(var_a, var_b)
    raise ValueError(f"unknown feature-loss reduction {reduction!r}; expected 'mse' or 'stats'")


def feature_distance(a: list[Tensor], b: list[Tensor], ctx: FeatureContext) -> Tensor:
    """Mean over the configured stages of the per-stage distance."""
    return torch.stack([stage_distance(a[s], b[s], ctx.reduction) for s in ctx.stages]).mean()


def event_mask(events: Tensor, size: tuple[int, int]) -> Tensor:
    """1 where a stage cell contains at least one non-zero event voxel: [B,1,h,w] from events [B,C,H,W]."""
    active = (events != 0).any(dim=1, keepdim=True).float()
    return F.adaptive_max_pool2d(active, size)


def masked_distance(a: list[Tensor], b: list[Tensor], events: Tensor, ctx: FeatureContext) -> Tensor:
    """MSE over the stage cells that contain events: sum over masked cells / (channels x masked cells).

    Stages whose mask is empty are skipped; with no events anywhere the term is 0 (no gradient).
    """
    values = []
    for s in ctx.stages:
        mask = event_mask(events, a[s].shape[-2:]).to(a[s].dtype)
        cells = mask.sum()
        if cells > 0:
            values.append(((a[s] - b[s]) ** 2 * mask).sum() / (a[s].shape[1] * cells))
    if not values:
        return a[ctx.stages[0]].sum() * 0.0
    return torch.stack(values).mean()


def _detached(features: list[Tensor]) -> list[Tensor]:
    return [f.detach() for f in features]


def rgb_event_src(ctx: FeatureContext) -> Tensor:
    """L2(RGB src, EVENT src): image vs event encoder on the day batch, before fusion; nothing detached,
    so both encoders are pulled toward each other (study: dacs_loss_L2_sourcedomain.py, lambda_l2)."""
    return feature_distance(ctx.source["image"], ctx.source[ctx.second], ctx)


def fusion_st(ctx: FeatureContext) -> Tensor:
    """L2(FUSION src, FUSION tgt): fusion-module outputs, source detached
    (study: dacs_solo_L2_sourcetarget_fusion.py, lambda_l2_st)."""
    return feature_distance(ctx.target["fusion"], _detached(ctx.source["fusion"]), ctx)


def rgb_st(ctx: FeatureContext) -> Tensor:
    """L2(RGB src, RGB tgt): image-encoder outputs, source detached (study: lambda_l2_rgb_st)."""
    return feature_distance(ctx.target["image"], _detached(ctx.source["image"]), ctx)


def event_s_rgb_t(ctx: FeatureContext) -> Tensor:
    """L2(EVENT src, RGB tgt): the target IMAGE features pulled toward the source EVENT features, source
    detached; the target event branch gets no gradient (study: dacs_L2_RGBst_L2_EVENTsRGBt.py)."""
    return feature_distance(ctx.target["image"], _detached(ctx.source[ctx.second]), ctx)


def event_st(ctx: FeatureContext) -> Tensor:
    """L2(EVENT src, EVENT tgt): event-encoder outputs, source detached
    (study: dacs_L2_RGBst_L2_EVENTst.py)."""
    return feature_distance(ctx.target[ctx.second], _detached(ctx.source[ctx.second]), ctx)


def masked_event_s_rgb_t(ctx: FeatureContext) -> Tensor:
    """`event_s_rgb_t` computed only at stage cells that contain events.

    The study's MaskedEvent file is not public; this is OUR definition: the mask comes from the non-zero
    voxels of the source pseudo-events (`mask_source: target` uses the target batch's events), max-pooled
    to each stage grid; masked MSE = sum over masked cells / (channels x masked cells); 0 when no cell has
    events.
    """
    events = ctx.source_events if ctx.mask_source == "source" else ctx.target_events
    if events is None:
        raise ValueError(f"masked_event_s_rgb_t needs the {ctx.mask_source} events")
    return masked_distance(ctx.target["image"], _detached(ctx.source["events"]), events, ctx)


@dataclass(frozen=True)
class Term:
    """One loss term: its default lambda, the phase it joins ('source' or 'mixed'), how to compute it, and
    the target modalities it needs beyond image + second modality (e.g. {"events"} for a mask made of
    event voxels), checked against the target registry before anything runs."""

    default_lambda: float
    phase: str
    compute: Callable[[FeatureContext], Tensor]
    requires: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FeatureLossVariant:
    """A named set of terms. `terms` maps term name -> `Term`; `default_lambdas` maps name -> lambda."""

    name: str
    description: str
    terms: dict[str, Term] = field(default_factory=dict)

    @property
    def default_lambdas(self) -> dict[str, float]:
        """Term name -> default lambda (the L2 fork's values)."""
        return {name: term.default_lambda for name, term in self.terms.items()}

    @property
    def requires(self) -> dict[str, frozenset[str]]:
        """Term name -> what it needs of the target, for the terms that need anything."""
        return {name: term.requires for name, term in self.terms.items() if term.requires}

    def resolve_lambdas(
        self, scale: float = 1.0, explicit: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Per-term lambdas that train: each term's default times `scale` (1.0 = the fork's values), then
        the `explicit` per-term lambdas, which win. An unknown term in `explicit` is an error."""
        resolved = {name: float(scale) * term.default_lambda for name, term in self.terms.items()}
        for name, value in (explicit or {}).items():
            if name not in resolved:
                raise ValueError(f"variant {self.name!r} has no term {name!r}; its terms: {sorted(resolved)}")
            resolved[name] = float(value)
        return resolved

    def compute(
        self, phase: str, ctx: FeatureContext, lambdas: dict[str, float]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """{term: (lambda-weighted loss to add, raw value for logging)} for the terms of one phase.

        A term with lambda 0 is evaluated without gradient, for logging only, so a variant at lambda 0
        trains exactly like `none`.
        """
        out = {}
        for name, term in self.terms.items():
            if term.phase != phase:
                continue
            if lambdas[name] == 0:
                with torch.no_grad():
                    raw = term.compute(ctx)
                out[name] = (raw.new_zeros(()), raw.detach())
            else:
                raw = term.compute(ctx)
                out[name] = (lambdas[name] * raw, raw.detach())
        return out

    def has_mixed_terms(self) -> bool:
        """Whether any term joins the mixed phase (and so needs the target-side features)."""
        return any(term.phase == MIXED for term in self.terms.values())


SOURCE, MIXED = "source", "mixed"

VARIANTS: dict[str, FeatureLossVariant] = {
    "none": FeatureLossVariant("none", "the CMDA baseline: no feature-alignment term"),
    "src_rgb_event": FeatureLossVariant(
        "src_rgb_event",
        "source RGB vs source event features (the study dropped it for bad performance)",
        {"rgb_event_src": Term(0.1, SOURCE, rgb_event_src)},
    ),
    "src_rgb_event+fusion_st": FeatureLossVariant(
        "src_rgb_event+fusion_st",
        "source RGB-event term plus source-target fusion term (lambdas inferred from the study's comments)",
        {"rgb_event_src": Term(0.1, SOURCE, rgb_event_src), "fusion_st": Term(0.1, MIXED, fusion_st)},
    ),
    "fusion_st": FeatureLossVariant(
        "fusion_st",
        "source vs target fusion features (0.05 in the code that ran)",
        {"fusion_st": Term(0.05, MIXED, fusion_st)},
    ),
    "rgb_st+event_s_rgb_t": FeatureLossVariant(
        "rgb_st+event_s_rgb_t",
        "source vs target RGB features, and source event vs target RGB features",
        {"rgb_st": Term(0.1, MIXED, rgb_st), "event_s_rgb_t": Term(0.05, MIXED, event_s_rgb_t)},
    ),
    "rgb_st+event_st": FeatureLossVariant(
        "rgb_st+event_st",
        "source vs target RGB features, and source vs target event features (the study's last run)",
        {"rgb_st": Term(0.1, MIXED, rgb_st), "event_st": Term(0.05, MIXED, event_st)},
    ),
    "rgb_st+event_s_rgb_t+masked_event": FeatureLossVariant(
        "rgb_st+event_s_rgb_t+masked_event",
        "rgb_st+event_s_rgb_t with the event term only at stage cells that contain events (our definition)",
        {
            "rgb_st": Term(0.1, MIXED, rgb_st),
            "masked_event_s_rgb_t": Term(0.05, MIXED, masked_event_s_rgb_t, requires=frozenset({"events"})),
        },
    ),
}
