"""Running a trained model over many images: ``predict_to_folder``."""
from .folder import PredictOptions, PredictReport, predict_to_folder

__all__ = ["PredictOptions", "PredictReport", "predict_to_folder"]
