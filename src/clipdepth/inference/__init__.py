"""Running a trained model over many images (``predict_to_folder``) and videos (``predict_videos``)."""

from .folder import PredictOptions, PredictReport, check_image, infer_batch, predict_to_folder, input_lines
from .video import VideoReport, predict_video, predict_videos

__all__ = [
    "PredictOptions",
    "PredictReport",
    "VideoReport",
    "check_image",
    "infer_batch",
    "input_lines",
    "predict_to_folder",
    "predict_video",
    "predict_videos",
]
