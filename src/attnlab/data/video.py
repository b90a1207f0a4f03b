"""Video files in and out through PyAV (the FFmpeg its wheel ships): no system FFmpeg, no torchcodec.

`read_video` serves every video source the same way: a file path (UCF101-style ``video`` columns,
absolute or relative to a root directory), or the ``{bytes, path}`` struct a hub ``Video`` column holds
when cast with ``decode=False``. Frames come back as uint8 arrays; frame sampling (which T frames of
a longer video) is `sample_frame_indices`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

Sampling = Literal["uniform", "random"]
VideoSource = str | Path | dict[str, Any]


class VideoReadError(ValueError):
    """A video that cannot be decoded (missing, truncated, not a video, no frames); names the file."""


def write_video(
    target: str | Path | io.BytesIO, frames: np.ndarray, *, fps: int = 8, crf: int = 12, codec: str = "libx264"
) -> None:
    """Encode frames as an MP4 (H.264, yuv420p) file or buffer.

    Args:
        target: a path (``.mp4``) or a writable buffer.
        frames: uint8 (T, H, W) grey or (T, H, W, 3) RGB frames; H and W must be even (yuv420p).
        fps: frame rate written into the container.
        crf: x264 constant rate factor (0 is lossless luma, 18 "visually lossless"; 12 keeps digits crisp).

    libx264 runs on one thread with timestamps set; even so, repeated encodes of the same frames can
    differ by a few grey levels (measured on about 1 clip in 10), so compare decoded frames within codec error.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"frames must be uint8 (T, H, W) or (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in yuv420p needs even frame sides, got {height}x{width}")
    pixel_format = "gray" if frames.ndim == 3 else "rgb24"
    with av.open(target if isinstance(target, io.BytesIO) else str(target), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"crf": str(crf)}
        if codec == "libx264":  # one thread: x264's threaded lookahead adds run-to-run differences
            options["x264-params"] = "threads=1:lookahead-threads=1"
        stream.options = options
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=pixel_format)
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder


def describe(source: VideoSource) -> str:
    """A short name of a video source for error messages."""
    if isinstance(source, dict):
        return str(source.get("path") or f"<{len(source.get('bytes') or b'')} bytes>")
    return str(source)


def _open_target(source: VideoSource, root: Path | None) -> str | io.BytesIO:
    if isinstance(source, dict):  # a hub Video column read with decode=False
        if source.get("bytes"):
            return io.BytesIO(source["bytes"])
        if not source.get("path"):
            raise VideoReadError("a video value with neither bytes nor path")
        source = source["path"]
    path = Path(source)
    if not path.is_absolute() and root is not None:
        path = root / path
    if not path.is_file():
        raise VideoReadError(f"video file {path} does not exist")
    return str(path)


def read_video(source: VideoSource, *, root: str | Path | None = None, grey: bool = True) -> np.ndarray:
    """Decode every frame of a video.

    Args:
        source: a path (relative paths resolve against ``root``) or a ``{bytes, path}`` dict.
        grey: return luma only, (T, H, W); else RGB, (T, H, W, 3).

    Returns:
        uint8 frames. Raises `VideoReadError` naming the file when it is missing, truncated, not a
        video, or holds no frame.
    """
    name = describe(source)
    try:
        target = _open_target(source, Path(root) if root is not None else None)
        with av.open(target) as container:
            if not container.streams.video:
                raise VideoReadError("no video stream")
            frames = [f.to_ndarray(format="gray" if grey else "rgb24") for f in container.decode(video=0)]
    except VideoReadError as err:
        raise VideoReadError(f"cannot read video {name}: {err}") from None
    except (av.FFmpegError, OSError, ValueError) as err:  # damaged, truncated or not a video at all
        raise VideoReadError(f"cannot read video {name}: {type(err).__name__}: {err}") from err
    if not frames:
        raise VideoReadError(f"cannot read video {name}: it decodes to no frames (empty or truncated file)")
    return np.stack(frames)


def sample_frame_indices(
    total: int, num_frames: int, *, sampling: Sampling = "uniform", stride: int = 1, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Which ``num_frames`` of ``total`` frames a clip takes, in order.

    ``uniform``: evenly spaced over the whole video (TSN-style; the centre of each of T equal segments).
    ``random``: a contiguous window of T frames ``stride`` apart at a random start (training
    augmentation); a video shorter than the window repeats its last frame.
    """
    if total < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame and num_frames >= 1 (got total={total}, num_frames={num_frames})")
    if sampling == "uniform":
        return np.minimum(((np.arange(num_frames) + 0.5) * total / num_frames).astype(np.int64), total - 1)
    if sampling != "random":
        raise ValueError(f"data.sampling='{sampling}' is unknown; choose uniform or random")
    span = (num_frames - 1) * stride + 1
    start = int((rng or np.random.default_rng()).integers(0, max(total - span, 0) + 1))
    return np.minimum(start + np.arange(num_frames) * stride, total - 1)


def take_frames(frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """frames[indices] along time, (T', ...)."""
    return frames[np.asarray(indices, dtype=np.int64)]
