from .pureclip import PatchTargets, alignment_loss, bin_index, counted_pixels, embedding_loss, infonce_loss, patch_targets, rmse_loss

__all__ = ["PatchTargets", "alignment_loss", "bin_index", "counted_pixels", "embedding_loss", "infonce_loss", "patch_targets", "rmse_loss"]
