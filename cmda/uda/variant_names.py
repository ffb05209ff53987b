"""The feature-loss variants' names in registry order, importable without torch.

The registry (`cmda.uda.feature_losses.VARIANTS`) needs torch; sweep validation and the analysis (which
never import torch) read the names and their order here. The registry checks at import that it lists
exactly these names in this order, so the two cannot drift apart.
"""

VARIANT_NAMES = (
    "none",
    "src_rgb_event",
    "src_rgb_event+fusion_st",
    "fusion_st",
    "rgb_st+event_s_rgb_t",
    "rgb_st+event_st",
    "rgb_st+event_s_rgb_t+masked_event",
)
