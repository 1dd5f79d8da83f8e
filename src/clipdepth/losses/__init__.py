from .pureclip import (
    PATCH_RULES,
    PatchTargets,
    alignment_loss,
    bin_index,
    counted_pixels,
    embedding_loss,
    infonce_loss,
    patch_targets,
    rmse_loss,
)

__all__ = [
    "PATCH_RULES",
    "PatchTargets",
    "alignment_loss",
    "bin_index",
    "counted_pixels",
    "embedding_loss",
    "infonce_loss",
    "patch_targets",
    "rmse_loss",
]
