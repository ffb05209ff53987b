"""`cmda import-checkpoint`: a checkpoint written by the original CMDA code -> a checkpoint folder of ours.

What the original writes (XiaRho/CMDA: mmcv's `save_checkpoint` of its UDA wrapper `DACS`) is a dict
{'meta', 'state_dict', 'optimizer'}; the state dict holds
  model.*              the student, a `FusionEncoderDecoder` (the weights the original's test script loads)
  ema_model.*          the EMA teacher, the same layout
  cyclegan_itrd2en.*   the frozen CycleGAN event translator (event targets only; pix2pix `model.N.*` names)
Inside a FusionEncoderDecoder, original name -> ours (`SHARED_RULES` and `FUSION_RULES` below):
  backbone_image.*, backbone_events.*     NVlabs MiT names, ours are the same
  fusion_module.basic_block.{2i, 2i+1}    AttentionAvgFusion (the DSEC recipe) keeps stage i's image block
                                          and event block interleaved in one list -> fusion.image_blocks.i
                                          and fusion.event_blocks.i
  fusion_module.basic_block.i / .linear_block.i   AttentionFusion (the Dark Zurich recipe): the Block over
                                          the 2C concatenation and the Mlp 2C->C->C -> fusion.blocks.i and
                                          fusion.projections.i
  fusion_isr_module.*                     a second AttentionFusion that the DSEC config builds but never
                                          runs (`isr_another_fusion` is off): dropped
  decode_head.embed_layers_image.i.proj   -> decode_head.embed.i
  decode_head.fuse_layer_image.aspp_modules.j.{conv,bn} and .{depthwise,pointwise}_conv.{conv,bn}
                                          -> decode_head.fuse.branches.j[.depthwise|.pointwise].{conv,bn}
  decode_head.fuse_layer_image.bottleneck -> decode_head.fuse.bottleneck; conv_seg keeps its name
  decode_head.{embed_layers,fuse_layer}_{events,fusion}.*   `share_decoder` makes these the image
                                          decoder's modules again and mmcv saves every name: each must
                                          equal its image-decoder twin (else the decoders were not shared
                                          and the file is refused), then it is dropped
`imnet_model.*` (the frozen ImageNet copy of the feature-distance loss, off in the released configs) and the
optimizer state are not part of the network and are dropped; the trainer starts from a fresh optimizer.

Everything is checked before anything is written, and each refusal names the file and what does not fit:
a file that is no checkpoint or is cut short, the setting (an event translator or fusion layout that belongs
to another target than the config's), the backbone size, the second backbone's input channels, classes and
decoder width, then every key and shape against the model the config builds (unexpected original keys,
missing ones by their original names, wrong shapes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmda.errors import CMDAError

if TYPE_CHECKING:  # torch is imported where it is used: `cmda --help` and `cmda data` stay quick
    from torch import Tensor

STUDENT, TEACHER, TRANSLATOR = "model.", "ema_model.", "cyclegan_itrd2en."
DROPPED_PREFIXES = {
    "imnet_model.": "the frozen ImageNet model of the feature-distance loss (not part of the network)",
}
IMPORT_RECORD = "import.json"

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]
DROP, ALIAS = "<drop>", "<alias>"


class CheckpointImportError(CMDAError, ValueError):
    """An original checkpoint that cannot become a checkpoint of ours; the message names file and problem."""


def _rule(pattern: str, target: str | Callable[[re.Match[str]], str]) -> Rule:
    """`target` is a format string over the match's groups ({1}, {2}, ...) or a function of the match."""
    make = target if callable(target) else (lambda m, t=target: t.format(m.group(0), *m.groups()))
    return re.compile(pattern), make


DECODER_ALIAS = re.compile(r"decode_head\.(embed_layers|fuse_layer)_(events|fusion)\.(.+)")
SHARED_RULES: list[Rule] = [
    _rule(r"backbone_(image|events)\.(.+)", "{0}"),
    _rule(r"decode_head\.conv_seg\.(weight|bias)", "{0}"),
    _rule(r"decode_head\.embed_layers_image\.(\d+)\.proj\.(weight|bias)", "decode_head.embed.{1}.{2}"),
    _rule(
        r"decode_head\.fuse_layer_image\.aspp_modules\.(\d+)\.(conv|bn)\.(.+)",
        "decode_head.fuse.branches.{1}.{2}.{3}",
    ),
    _rule(
        r"decode_head\.fuse_layer_image\.aspp_modules\.(\d+)\.(depthwise|pointwise)_conv\.(conv|bn)\.(.+)",
        "decode_head.fuse.branches.{1}.{2}.{3}.{4}",
    ),
    _rule(
        r"decode_head\.fuse_layer_image\.bottleneck\.(conv|bn)\.(.+)", "decode_head.fuse.bottleneck.{1}.{2}"
    ),
    (DECODER_ALIAS, lambda m: ALIAS),
]
"""Original segmentor key -> ours, for the parts every setting shares (backbones and decoder)."""

FUSION_RULES: dict[str, list[Rule]] = {
    "attention_avg": [
        _rule(
            r"fusion_module\.basic_block\.(\d+)\.(.+)",
            lambda m: f"fusion.{('image_blocks', 'event_blocks')[int(m[1]) % 2]}.{int(m[1]) // 2}.{m[2]}",
        )
    ],
    "attention": [
        _rule(r"fusion_module\.basic_block\.(\d+)\.(.+)", "fusion.blocks.{1}.{2}"),
        _rule(r"fusion_module\.linear_block\.(\d+)\.(.+)", "fusion.projections.{1}.{2}"),
    ],
    "average": [],
}
"""Original `fusion_module` key -> ours, per fusion (the original's AttentionAvgFusion, AttentionFusion,
AverageFusion, in the names of `cmda.models.fusion.FUSIONS`)."""

ISR_FUSION = re.compile(r"fusion_isr_module\..+")


@dataclass
class OriginalCheckpoint:
    """The parts of an original checkpoint file, each keyed without its prefix."""

    path: Path
    student: dict[str, Tensor]
    teacher: dict[str, Tensor] | None
    translator: dict[str, Tensor] | None
    meta: dict[str, Any]
    dropped: dict[str, str] = field(default_factory=dict)
    """Dropped prefix -> why."""


@dataclass
class Layout:
    """What the student's keys say about its architecture (read from shapes, never assumed)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    image_channels: int | None
    second_channels: int | None
    fusion: str | None
    isr_fusion: bool
    classes: int | None
    decoder_channels: int | None

    @property
    def backbone(self) -> str | None:
        return mit_name(self.depths, self.widths)

    def describe_backbone(self) -> str:
        return describe_mit(self.depths, self.widths)


def mit_name(depths: tuple[int, ...], widths: tuple[int, ...]) -> str | None:
    """The registry name of an MiT of these blocks per stage and widths (None: no such variant)."""
    from cmda.models.mit import MIT_CONFIGS

    for name, config in MIT_CONFIGS.items():
        if config.depths == depths and config.embed_dims == widths:
            return name
    return None


def describe_mit(depths: tuple[int, ...], widths: tuple[int, ...]) -> str:
    name = mit_name(depths, widths) or "an unknown MiT"
    return f"{name} (blocks per stage {', '.join(map(str, depths))}; widths {', '.join(map(str, widths))})"


# -- reading --------------------------------------------------------------------------------------------


def _load(path: Path, allow_pickle: bool) -> Any:
    import torch

    if not path.is_file():
        raise CheckpointImportError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # re-raised with the file named and what it means
        text = str(error)
        if "Unsupported global" in text:
            hint = (
                "it holds Python objects beyond tensors and plain types; if you trust the file (e.g. the "
                "authors' release), add --allow-pickle"
            )
        else:
            hint = "not a complete PyTorch checkpoint (cut short by a download, or not a .pth file)"
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise CheckpointImportError(f"{path}: cannot read: {hint} ({first})") from None


def read_original(path: str | os.PathLike[str], allow_pickle: bool = False) -> OriginalCheckpoint:
    """Read an original checkpoint: mmcv's dict with `state_dict`, or a bare state dict of the wrapper or of
    a segmentor (`backbone_image.*` at the top, as loaders that strip `model.` leave it)."""
    from torch import Tensor

    path = Path(path)
    raw = _load(path, allow_pickle)
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointImportError(
            f"{path}: not a CMDA checkpoint: expected mmcv's dict with a 'state_dict' of tensors (or a state "
            f"dict), got {type(raw).__name__}"
            + (f" with keys {sorted(map(str, raw))[:8]}" if isinstance(raw, Mapping) else "")
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    parts: dict[str, dict[str, Tensor]] = {STUDENT: {}, TEACHER: {}, TRANSLATOR: {}}
    dropped: dict[str, str] = {}
    bare: dict[str, Tensor] = {}
    for key, value in tensors.items():
        prefix = next((p for p in (TEACHER, STUDENT, TRANSLATOR) if key.startswith(p)), None)
        if prefix is not None:
            parts[prefix][key[len(prefix) :]] = value
            continue
        dropped_prefix = next((p for p in DROPPED_PREFIXES if key.startswith(p)), None)
        if dropped_prefix is not None:
            dropped[dropped_prefix] = DROPPED_PREFIXES[dropped_prefix]
        else:
            bare[key] = value
    if not parts[STUDENT] and any(k.startswith("backbone_image.") for k in bare):  # a segmentor's own
        parts[STUDENT], bare = bare, {}
    if bare:
        raise CheckpointImportError(
            f"{path}: keys outside the original's model.* / ema_model.* / cyclegan_itrd2en.*: "
            f"{_listing(sorted(bare))}; is this a CMDA checkpoint?"
        )
    if not parts[STUDENT]:
        raise CheckpointImportError(
            f"{path}: no model.* weights (the student network); is this a CMDA checkpoint?"
        )
    meta = raw.get("meta") if isinstance(raw, Mapping) and isinstance(raw.get("meta"), Mapping) else {}
    return OriginalCheckpoint(
        path, parts[STUDENT], parts[TEACHER] or None, parts[TRANSLATOR] or None, dict(meta), dropped
    )


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def mit_size(state: Mapping[str, Tensor], prefix: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, width per stage) of the MiT whose NVlabs-named weights are under `prefix`."""
    depths, widths = [], []
    for stage in range(1, 5):
        head = f"{prefix}block{stage}."
        depths.append(len({k[len(head) :].split(".")[0] for k in state if k.startswith(head)}))
        weight = state.get(f"{prefix}patch_embed{stage}.proj.weight")
        widths.append(int(weight.shape[0]) if weight is not None else 0)
    return tuple(depths), tuple(widths)


def read_layout(state: Mapping[str, Tensor]) -> Layout:
    """Backbone depths/widths, stem channels, fusion kind, classes and decoder width from keys and shapes."""
    depths, widths = mit_size(state, "backbone_image.")
    stem = "patch_embed1.proj.weight"
    image_stem, second_stem = state.get(f"backbone_image.{stem}"), state.get(f"backbone_events.{stem}")
    fusion_keys = [k for k in state if k.startswith("fusion_module.")]
    blocks = {k.split(".")[2] for k in fusion_keys if k.startswith("fusion_module.basic_block.")}
    if any(k.startswith("fusion_module.linear_block.") for k in fusion_keys):
        fusion = "attention"
    elif fusion_keys:
        fusion = "attention_avg" if len(blocks) == 2 * len(depths) else None
    else:
        fusion = "average"
    seg = state.get("decode_head.conv_seg.weight")
    return Layout(
        depths=depths,
        widths=widths,
        image_channels=None if image_stem is None else int(image_stem.shape[1]),
        second_channels=None if second_stem is None else int(second_stem.shape[1]),
        fusion=fusion,
        isr_fusion=any(ISR_FUSION.fullmatch(k) for k in state),
        classes=None if seg is None else int(seg.shape[0]),
        decoder_channels=None if seg is None else int(seg.shape[1]),
    )


# -- checks against the config ---------------------------------------------------------------------------


def check_setting(original: OriginalCheckpoint, layout: Layout, config, config_path: str) -> None:
    """The checkpoint's setting, backbone and sizes against the config, before any key is mapped."""
    from cmda.data.targets import TARGETS

    path, spec = original.path, config.target
    event_parts = original.translator is not None or layout.isr_fusion
    if (event_parts and not spec.provides("events")) or layout.fusion != config.model.fusion:
        evidence = []
        if original.translator is not None:
            evidence.append("it holds the CycleGAN event translator cyclegan_itrd2en.*")
        if layout.isr_fusion:
            evidence.append("it holds the event setting's fusion_isr_module.*")
        evidence.append(f"its fusion_module has the {layout.fusion or 'unknown'} layout")
        others = [
            name
            for name, other in TARGETS.items()
            if name != spec.name
            and other.recipe.fusion == layout.fusion
            and (other.provides("events") or not event_parts)
        ]
        if others:
            raise CheckpointImportError(
                f"{path} is a checkpoint of the {others[0]} setting ({'; '.join(evidence)}), but "
                f"{config_path} trains {spec.name} (data.target.name) with model.fusion "
                f"{config.model.fusion}; import it with a config whose data.target.name is {others[0]}"
            )
        raise CheckpointImportError(
            f"{path}: {'; '.join(evidence)}, but {config_path} sets model.fusion: {config.model.fusion} for "
            f"target {spec.name}" + (f"; set model.fusion: {layout.fusion}" if layout.fusion else "")
        )
    wanted = config.model.backbone
    if layout.backbone != wanted:
        raise CheckpointImportError(
            f"{path}: its backbones are {layout.describe_backbone()}, but {config_path} sets model.backbone: "
            f"{wanted}" + (f"; set model.backbone: {layout.backbone}" if layout.backbone else "")
        )
    checks = [
        ("model.num_classes", layout.classes, config.model.num_classes, "classes (decode_head.conv_seg)"),
        (
            "model.decoder_channels",
            layout.decoder_channels,
            config.model.decoder_channels,
            "decoder channels (decode_head.conv_seg)",
        ),
        (
            "data.target (second input channels)",
            layout.second_channels,
            config.data.target.second_channels,
            "input channels of the second backbone (backbone_events.patch_embed1)",
        ),
    ]
    for fieldname, found, expected, what in checks:
        if found is not None and found != expected:
            raise CheckpointImportError(
                f"{path}: {found} {what}, but {config_path} gives {expected} ({fieldname})"
            )


# -- key mapping ------------------------------------------------------------------------------------------


def map_segmentor(
    state: Mapping[str, Tensor], fusion: str, allow_isr_fusion: bool, path: Path, prefix: str
) -> dict[str, Tensor]:
    """Original segmentor state -> ours. Keys no rule knows and decoder aliases that differ from the shared
    decoder are errors naming the keys (with `prefix`, as they appear in the file)."""
    import torch

    rules = SHARED_RULES + FUSION_RULES[fusion]
    out: dict[str, Tensor] = {}
    unexpected, unshared = [], []
    for key, value in state.items():
        if allow_isr_fusion and ISR_FUSION.fullmatch(key):
            continue
        target = next((make(m) for pattern, make in rules if (m := pattern.fullmatch(key))), None)
        if target is None:
            unexpected.append(prefix + key)
        elif target == ALIAS:
            twin = re.sub(r"_(events|fusion)\.", "_image.", key, count=1)
            # a missing twin is reported as missing by check_against, in its own name
            if twin in state and (state[twin].shape != value.shape or not torch.equal(state[twin], value)):
                unshared.append(prefix + key)
        else:
            out[target] = value
    if unexpected:
        raise CheckpointImportError(
            f"{path}: unexpected keys (not part of the CMDA network this config builds): "
            f"{_listing(unexpected)}"
        )
    if unshared:
        raise CheckpointImportError(
            f"{path}: the decoder is not shared between branches ({_listing(unshared)} differ from the image "
            "decoder's); cmda-tune's CMDA has one decoder for every branch (the original's share_decoder)"
        )
    return out


def check_against(
    expected: Mapping[str, Tensor],
    weights: Mapping[str, Tensor],
    original_name: Callable[[str], str],
    path: Path,
    what: str,
) -> None:
    """Every key of the built model present with its shape and nothing more; keys are named as the file
    names them (`original_name` maps ours back)."""
    missing = [original_name(k) for k in expected if k not in weights]
    if missing:
        raise CheckpointImportError(f"{path}: missing {what} weights: {_listing(missing)}")
    extra = [original_name(k) for k in weights if k not in expected]
    if extra:
        raise CheckpointImportError(f"{path}: unexpected {what} keys: {_listing(extra)}")
    wrong = [
        f"{original_name(k)} {tuple(weights[k].shape)} (this config: {tuple(expected[k].shape)})"
        for k in expected
        if tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointImportError(f"{path}: wrong shapes for this config: {_listing(wrong, 4)}")


INVERSE_RULES = [
    (r"decode_head\.embed\.(\d+)\.(.+)", r"decode_head.embed_layers_image.\1.proj.\2"),
    (r"decode_head\.fuse\.branches\.(\d+)\.(depthwise|pointwise)\.(.+)",
     r"decode_head.fuse_layer_image.aspp_modules.\1.\2_conv.\3"),
    (r"decode_head\.fuse\.branches\.(\d+)\.(.+)", r"decode_head.fuse_layer_image.aspp_modules.\1.\2"),
    (r"decode_head\.fuse\.bottleneck\.(.+)", r"decode_head.fuse_layer_image.bottleneck.\1"),
    (r"fusion\.image_blocks\.(\d+)\.(.+)", lambda m: f"fusion_module.basic_block.{2 * int(m[1])}.{m[2]}"),
    (r"fusion\.event_blocks\.(\d+)\.(.+)", lambda m: f"fusion_module.basic_block.{2 * int(m[1]) + 1}.{m[2]}"),
    (r"fusion\.blocks\.(\d+)\.(.+)", r"fusion_module.basic_block.\1.\2"),
    (r"fusion\.projections\.(\d+)\.(.+)", r"fusion_module.linear_block.\1.\2"),
]  # fmt: skip
"""Our segmentor key -> the original's (for messages about keys the file lacks or has in excess)."""


def original_segmentor_name(prefix: str) -> Callable[[str], str]:
    def name(ours: str) -> str:
        for pattern, replacement in INVERSE_RULES:
            if re.fullmatch(pattern, ours):
                return prefix + re.sub(pattern, replacement, ours)
        return prefix + ours

    return name


# -- the import -------------------------------------------------------------------------------------------


@dataclass
class Imported:
    """A converted checkpoint, ready to write: our checkpoint state and a record of what was done."""

    state: dict[str, Any]
    record: dict[str, Any]


def convert(original: OriginalCheckpoint, config, config_path: str) -> Imported:
    """Check the original against the config and convert it; raises CheckpointImportError, writes nothing."""
    import torch

    from cmda.models.cyclegan import ResnetGenerator
    from cmda.models.segmentor import build_model

    path = original.path
    layout = read_layout(original.student)
    check_setting(original, layout, config, config_path)
    events = config.target.provides("events")
    with torch.device("meta"):
        expected = build_model(config).state_dict()
    student = map_segmentor(original.student, config.model.fusion, events, path, STUDENT)
    check_against(expected, student, original_segmentor_name(STUDENT), path, "student (model.*)")
    notes = []
    if original.teacher is None:
        teacher = {k: v.clone() for k, v in student.items()}
        notes.append("no ema_model.* in the file: the teacher is a copy of the student")
    else:
        teacher = map_segmentor(original.teacher, config.model.fusion, events, path, TEACHER)
        check_against(expected, teacher, original_segmentor_name(TEACHER), path, "teacher (ema_model.*)")
    translator = None
    if original.translator is not None:
        with torch.device("meta"):
            generator = ResnetGenerator().state_dict()
        translator = dict(original.translator)
        check_against(generator, translator, lambda k: TRANSLATOR + k, path, "translator")
    dropped = dict(original.dropped)
    if layout.isr_fusion:
        dropped["fusion_isr_module."] = "the second fusion the DSEC config builds but never runs"
    if any(DECODER_ALIAS.match(key) for key in original.student):
        dropped["decode_head.{embed_layers,fuse_layer}_{events,fusion}."] = (
            "aliases of the one shared decoder (checked equal to decode_head.*_image)"
        )
    record = {
        "source": str(path.resolve()),
        "sha256": _sha256(path),
        "original_iteration": _meta_iteration(original.meta),
        "target": config.target.name,
        "backbone": config.model.backbone,
        "fusion": config.model.fusion,
        "evaluated_by_default": "student (the original's model.*, as its test script)",
        "teacher": "ema_model.*" if original.teacher is not None else "copy of the student",
        "translator": "cyclegan_itrd2en.*" if translator is not None else None,
        "dropped": dropped,
        "notes": notes,
    }
    state = {
        "model": {k: v.contiguous() for k, v in student.items()},
        "teacher": {k: v.contiguous() for k, v in teacher.items()},
        "translator": translator,
        "config": config.to_dict(),
        "metrics": {},
        "imported": record,
    }
    return Imported(state, record)


def _meta_iteration(meta: Mapping[str, Any]) -> int | None:
    value = meta.get("iter")
    return int(value) if isinstance(value, int) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_checkpoint(
    original_path: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overrides: list[str] | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Convert ORIGINAL.pth for CONFIG and write OUT/{checkpoint.pt, config.yaml, import.json} as one atomic
    folder; every check runs before the folder is created."""
    import torch

    from cmda.checkpoint import CHECKPOINT_FILE, CONFIG_FILE
    from cmda.config import load_config, save_config
    from cmda.io import atomic_directory

    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise CheckpointImportError(f"{out} exists; choose another --out or add --overwrite to replace it")
    config = load_config(config_path, overrides)
    imported = convert(read_original(original_path, allow_pickle), config, str(config_path))
    with atomic_directory(out) as tmp:
        torch.save(imported.state, tmp / CHECKPOINT_FILE)
        save_config(config, tmp / CONFIG_FILE)
        (tmp / IMPORT_RECORD).write_text(json.dumps(imported.record, indent=1) + "\n")
    return out


# -- command line ---------------------------------------------------------------------------------------


def add_import_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="convert a checkpoint of the original CMDA code (XiaRho/CMDA .pth) into a checkpoint folder",
    )
    parser.add_argument("original", type=Path, help="the original's checkpoint, e.g. iter_40000.pth")
    parser.add_argument("--config", required=True, help="the trainer config of the same setting and size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read the file with weights_only=False (runs pickled code: only for files you trust)",
    )
    parser.set_defaults(func=run_import_command)


def run_import_command(args: argparse.Namespace) -> int:
    out = import_checkpoint(args.original, args.config, args.out, args.set, args.overwrite, args.allow_pickle)
    record = json.loads((out / IMPORT_RECORD).read_text())
    print(f"wrote {out} ({record['target']}, {record['backbone']}, fusion {record['fusion']})")
    for note in record["notes"]:
        print(f"note: {note}")
    print(f"evaluate: cmda test {out}   (the student; --weights teacher for the EMA teacher)")
    print(f"fine-tune: cmda train CONFIG --set model.init_from={out}")
    return 0
