"""What bad input to the lifter raises; every message names the file and what was expected."""

from __future__ import annotations

from pose_jax.errors import InputError


class KeypointFileError(InputError, ValueError):
    """A keypoint file that cannot be read as any supported layout (empty, malformed)."""


class KeypointLayoutError(InputError, ValueError):
    """An unknown layout, or keypoints whose joint count does not fit the layout."""


class MissingKeypointsError(InputError, ValueError):
    """Keypoints with nothing to interpolate from (every frame NaN, a joint never seen)."""


class ImageSizeError(InputError, ValueError):
    """No image size where one is needed, or one that does not fit the keypoints' range."""


class LiftModelError(InputError, ValueError):
    """A model or checkpoint the lifter cannot use (another joint layout, a config mismatch)."""


class RenderError(InputError, ValueError):
    """An animation the renderer cannot write (unknown file type, ffmpeg not installed)."""
