"""`cmda data check pretrained/`: every weight file a run may read, loaded strictly before a run needs it.

What a weights folder holds and how each is checked (keys and shapes, on the meta device: no memory, no
values copied):
- `mit_b0.pth` .. `mit_b5.pth`: the NVlabs ImageNet encoders (`model.pretrained`), into the MiT of that name,
  as `CMDASegmentor.load_pretrained` loads them;
- any other `*.pth`: the CycleGAN event translator (`model.cyclegan`, e.g. cityscapes_ICD_to_dsec_EN.pth) if
  it loads as one, else a checkpoint of the original CMDA code (`model.*` / `ema_model.*`), which is counted
  as one to convert with `cmda import-checkpoint`; anything else is a problem;
- `<folder>/checkpoint.pt`: a checkpoint folder (trained here, or written by `cmda import-checkpoint`; what
  `model.init_from` and `cmda test` read): its student and teacher into the model its own config builds.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from cmda.data.check_report import CHECK_ERRORS, CheckReport

KIND = "pretrained"


def looks_like_weights(folder: Path) -> bool:
    """A folder of `*.pth` files or checkpoint folders (what `cmda data check` detects as weights)."""
    return any(folder.glob("*.pth")) or any(
        (child / "checkpoint.pt").is_file() for child in folder.iterdir() if child.is_dir()
    )


def _meta_load(module_factory, state, source, strict: bool = True) -> tuple[list[str], list[str]]:
    """load_strict into a module built on the meta device: (missing, unexpected) keys."""
    import torch

    from cmda.models.weights import load_strict

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op": shapes are what counts
        return load_strict(module_factory(), state, source, strict=strict)


def check_mit(path: Path) -> str:
    import torch

    from cmda.import_original import describe_mit, mit_name, mit_size
    from cmda.models.mit import build_mit, load_official_mit
    from cmda.models.segmentor import MIT_WEIGHTS_HINT
    from cmda.models.weights import read_state_dict

    state = read_state_dict(path, MIT_WEIGHTS_HINT)
    size = mit_size(state)
    if mit_name(*size) != path.stem:
        raise ValueError(f"{path}: holds {describe_mit(*size)}, not {path.stem}")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_official_mit(build_mit(path.stem), state, strict=True, source=path)
    return "MiT ImageNet encoders"


def check_other_pth(path: Path) -> str:
    """'event translators' or 'original CMDA checkpoints (convert with cmda import-checkpoint)'."""
    from cmda.import_original import CheckpointImportError, read_original
    from cmda.models.cyclegan import TRANSLATOR_HINT, ResnetGenerator
    from cmda.models.weights import read_state_dict

    state = read_state_dict(path, TRANSLATOR_HINT)
    missing, unexpected = _meta_load(ResnetGenerator, state, path, strict=False)
    if not missing and not unexpected:
        return "event translators"
    try:
        read_original(path)
    except CheckpointImportError:
        example = (missing or unexpected)[0]
        raise ValueError(
            f"{path}: neither the CycleGAN translator ({len(missing)} of its keys missing, {len(unexpected)} "
            f"unexpected, e.g. {example}) nor a checkpoint of the original CMDA code (model.* keys)"
        ) from None
    return "original CMDA checkpoints (convert with cmda import-checkpoint)"


def check_checkpoint_folder(folder: Path) -> str:
    from cmda.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, load_checkpoint
    from cmda.config import config_from_dict
    from cmda.errors import RunError
    from cmda.models.segmentor import build_model

    try:
        state = load_checkpoint(folder)
    except RunError as error:  # an unreadable file: a problem of this folder, not the end of the check
        raise ValueError(str(error)) from None
    config = config_from_dict(state["config"], source=str(folder / CONFIG_FILE))
    for network in ("model", "teacher"):
        if network in state:
            _meta_load(lambda: build_model(config), state[network], f"{folder / CHECKPOINT_FILE} ({network})")
    return "checkpoint folders"


def _record(report: CheckReport, check, path: Path) -> None:
    """Count what `check(path)` recognised, or record its error, shortened: PyTorch names every mismatched
    key, and the first lines say enough in a list of problems."""
    try:
        report.checked[check(path)] += 1
    except CHECK_ERRORS as error:
        lines = str(error).splitlines()
        more = [f"    ... ({len(lines) - 4} more lines)"] if len(lines) > 4 else []
        report.add("\n".join(lines[:4] + more))


def check_weights(root: str | Path) -> CheckReport:
    """One report for a weights folder (see the module docstring)."""
    from cmda.models.mit import MIT_CONFIGS

    root = Path(root)
    start = time.perf_counter()
    report = CheckReport(KIND, root, thorough=True)
    for path in sorted(root.glob("*.pth")):
        _record(report, check_mit if path.stem in MIT_CONFIGS else check_other_pth, path)
    for folder in sorted(p.parent for p in root.glob("*/checkpoint.pt")):
        _record(report, check_checkpoint_folder, folder)
    if not report.checked and not report.problems:
        report.add(f"{root}: no *.pth files and no <folder>/checkpoint.pt")
    report.seconds = time.perf_counter() - start
    return report
