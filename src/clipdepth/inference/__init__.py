"""Running a trained model over many images (``predict_to_folder``) and videos (``predict_videos``)."""
from .folder import PredictOptions, PredictReport, infer_batch, predict_to_folder
from .video import VideoReport, predict_video, predict_videos

__all__ = ["PredictOptions", "PredictReport", "VideoReport", "infer_batch", "predict_to_folder", "predict_video",
           "predict_videos"]
