"""Depth of a video as a video: ``predict_videos`` (what ``clipdepth predict clip.mp4`` runs).

Frames go through the model in batches exactly as a folder's images do (``infer_batch``), and
out as ``<name>_depth.mp4`` with the source's timestamps (its frame rate, variable or not): the
depth in colour over one range for the whole clip (``vmin``..``vmax``, default 0..the model's
max_depth, so colours do not flicker from frame to frame), beside the frame with ``side_by_side``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..io.atomic import clean_stale
from ..io.fingerprint import Made, file_digest, readable, text_digest
from ..io.predictions import colourise, side_by_side
from ..io.video import VIDEO_TAIL, Mp4Writer, probe_video, read_frames, video_made
from ..models.base import DepthModel
from .folder import PredictOptions, _caption_source, check_image, depth_settings, infer_batch


@dataclass
class VideoReport:
    """One video's output: ``frames`` frames of ``width`` x ``height`` at ``fps``; ``colours`` the
    metres its colours span (None for one kept from an earlier run, ``kept``); ``again``: it
    replaced an earlier run's mp4 of this video, made before the video was rewritten. ``failed``:
    why the video was skipped, one line naming it (then ``output`` is untouched and the numbers are 0)."""

    video: Path
    output: Path
    frames: int
    width: int
    height: int
    fps: Fraction
    colours: tuple[float, float] | None
    kept: bool = False
    again: bool = False
    failed: str | None = None

    def line(self) -> str:
        """What became of a video that was not skipped, for the run's summary."""
        what = f"{self.frames} frames of {self.width}x{self.height} at {float(self.fps):g} fps"
        output = readable(str(self.output))  # stdout takes no undecodable byte of a file name
        return (
            f"kept {output}: {what}, finished before (--overwrite to replace)"
            if self.kept
            else f"wrote {output}: {what}, colours {self.colours[0]:g}-{self.colours[1]:g} m"
            + (" (replacing the mp4 of the video's earlier content)" if self.again else "")
        )


def video_colours(model: DepthModel, options: PredictOptions) -> tuple[float, float]:
    """The metres a video's colours span: ``options.vmin`` (default 0) to ``options.vmax``
    (default the model's max_depth); ConfigError where they are not in order."""
    low = 0.0 if options.vmin is None else options.vmin
    high = model.max_depth if options.vmax is None else options.vmax
    if not high > low:
        raise ConfigError(
            f"vmin {low:g} must be below {high:g} m, the top of the video's colours "
            f"({'vmax' if options.vmax is not None else 'the model max_depth'})",
            setting="vmin",
        )
    return low, float(high)


def predict_video(
    model: DepthModel,
    video: Path,
    output: Path,
    options: PredictOptions,
    caption: str | None = None,
    progress: bool = True,
    made: Made | None = None,
) -> VideoReport:
    """Write the depth of every frame of ``video`` as the colour mp4 ``output`` (atomically), over
    ``video_colours``; TR2M-like models read ``caption`` for every frame; ``made`` is recorded in
    it (``io.video.video_made``). DataError naming the video when it cannot be decoded, a frame is
    over ``options.max_pixels`` or needs more tiles than ``options.max_tiles``; nothing is left at
    ``output`` then."""
    low, high = video_colours(model, options)
    info = probe_video(video)
    if info.width * info.height > options.max_pixels:
        raise DataError(
            f"{video}: {info.width}x{info.height} frames are {info.width * info.height / 1e6:.3g} megapixels, "
            f"over the limit of {options.max_pixels / 1e6:g}",
            setting="max_pixels",
        )
    batch: list[np.ndarray] = []
    times: list[Fraction | None] = []

    def flush(writer: Mp4Writer) -> None:
        if not batch:
            return
        result = infer_batch(model, np.stack(batch), options, [caption] * len(batch) if model.uses_captions else None)
        for frame, time, depth in zip(batch, times, result["depth"].cpu().numpy()):
            colours = colourise(depth, high, vmin=low)
            writer.write(side_by_side(frame, colours) if options.side_by_side else colours, time)
        batch.clear()
        times.clear()

    with Mp4Writer(output, info.fps, made=made, time_base=info.time_base) as writer:
        for frame, time in tqdm(
            read_frames(video), desc=video.name, unit="frame", total=info.frames or None, dynamic_ncols=True, disable=not progress
        ):
            if batch and (frame.shape != batch[0].shape or len(batch) == options.batch_size):
                flush(writer)
            if not batch:
                try:
                    check_image(model, frame.shape[0], frame.shape[1], options)
                except DataError as exc:
                    raise DataError(f"{video}: {exc}", setting=exc.setting) from None
            batch.append(frame)
            times.append(time)
        flush(writer)
    made = probe_video(output)
    return VideoReport(video, output, writer.frames, made.width, made.height, info.fps, (low, high))


def predict_videos(
    model: DepthModel, jobs: list[tuple[Path, Path]], out: Path, options: PredictOptions, progress: bool = True
) -> list[VideoReport]:
    """``predict_video`` for each (video, name) of ``jobs`` (``collect_videos``) into
    ``out/<name>_depth.mp4``. Unless ``options.overwrite``, an earlier run's mp4 is taken as its
    record says (``io.fingerprint``): made from this video's content (and caption) with this model,
    these depth options, colours and layout, it is kept; made from content the video no longer has,
    it is replaced (``again``); another video's, or other settings', is left as it is. A video that
    is not made (unreadable, over a limit, no caption, or such an earlier mp4) is reported in its
    ``failed``, one line naming it, and the others go on, as images do. Raises ConfigError for
    options the model cannot use (captions, as for images)."""
    caption_for = _caption_source(model, options)
    clean_stale(out)  # what a killed run left half-written
    # The mp4 is the colours themselves: their range and layout are settings as the depth options are.
    settings = (
        {**depth_settings(model, options), "colours": list(video_colours(model, options)), "side_by_side": options.side_by_side}
        if jobs
        else {}
    )
    reports = []
    for video, name in jobs:
        output = out / name.parent / f"{name.name}{VIDEO_TAIL}"
        try:  # one bad video must not lose the others
            caption = caption_for(video, name)  # <name>.txt, as for images (folder.caption_file)
            made = Made(
                str(video.resolve()),
                {"video": file_digest(video), **({"caption": text_digest(caption)} if caption is not None else {})},
                settings,
            )
            again = False
            if output.exists() and not options.overwrite:
                earlier = video_made(output)
                refused = made.refusal(earlier, output, "the depth")
                if refused is not None:
                    raise DataError(refused, setting="overwrite")
                again = made.compare(earlier) == "inputs changed"
                if not again:
                    info = probe_video(output)
                    reports.append(VideoReport(video, output, info.frames, info.width, info.height, info.fps, None, kept=True))
                    continue
            reports.append(replace(predict_video(model, video, output, options, caption, progress, made), again=again))
        except DataError as exc:
            reason = str(exc) if str(exc).startswith(str(video)) else f"{video}: {exc}"
            reports.append(VideoReport(video, output, 0, 0, 0, Fraction(0), None, failed=reason))
    return reports
