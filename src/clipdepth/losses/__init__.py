from .pureclip import (
    PATCH_RULES,
    PatchTargets,
    alignment_loss,
    embedding_loss,
    infonce_loss,
    patch_targets,
    rmse_loss,
    valid_pixels,
)

__all__ = [
    "PATCH_RULES",
    "PatchTargets",
    "alignment_loss",
    "embedding_loss",
    "infonce_loss",
    "patch_targets",
    "rmse_loss",
    "valid_pixels",
]
