"""The CMDA network: MiT encoders, DAFormer decoder, fusion modules, segmentor and the frozen CycleGAN."""

from cmda.models.cyclegan import ResnetGenerator, load_event_translator
from cmda.models.daformer_head import DAFormerHead
from cmda.models.fusion import AttentionAvgFusion, AttentionFusion, AverageFusion, build_fusion
from cmda.models.mit import MIT_CONFIGS, MixVisionTransformer, build_mit, load_official_mit
from cmda.models.segmentor import CMDASegmentor, SegmentorOutput

__all__ = [
    "MIT_CONFIGS",
    "AttentionAvgFusion",
    "AttentionFusion",
    "AverageFusion",
    "CMDASegmentor",
    "DAFormerHead",
    "MixVisionTransformer",
    "ResnetGenerator",
    "SegmentorOutput",
    "build_fusion",
    "build_mit",
    "load_event_translator",
    "load_official_mit",
]
