"""The media leaf: image decode and fit, MP4 encode and probe, frames.

It imports nothing from `gateway`, `adapters` or `local_engine`; all three import it (the
import-linter contracts in pyproject.toml hold that), so the emulators and the local engine
run without the gateway.
"""

from media.frames import decode_frames, make_loop
from media.image import data_uri, decode_grey, decode_rgb, fit_image, fitted
from media.video import NotAVideo, VideoFacts, encode_mp4, probe

__all__ = [
    "NotAVideo",
    "VideoFacts",
    "data_uri",
    "decode_frames",
    "decode_grey",
    "decode_rgb",
    "encode_mp4",
    "fit_image",
    "fitted",
    "make_loop",
    "probe",
]
