"""Animations of a lift: the 2D input beside the 3D skeleton and its hypotheses (matplotlib).

Left: the converted 2D input in pixels (interpolated joints marked x). Right: the
aggregate 3D pose (left side red, right side blue; camera x to the right, depth into
the picture, up) with up to five hypotheses in grey, metres around the root.

``.mp4`` is written with ffmpeg from the ``imageio-ffmpeg`` package (``pip install
pose_jax[render]``); without it, or for ``.gif``, with Pillow. Imported only when
rendering.
"""

from __future__ import annotations

import os

import numpy as np

from pose_jax import skeleton as skeleton_lib
from pose_jax.lift.errors import RenderError
from pose_jax.lift.result import LiftResult

_SK = skeleton_lib.get_skeleton("h36m")


def _bones(sk: skeleton_lib.Skeleton) -> list[tuple[int, int]]:
    return [(p, j) for j, p in enumerate(sk.parents) if p >= 0]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(j: int, sk: skeleton_lib.Skeleton = _SK) -> str:
    return "tab:red" if j in sk.joints_left else "tab:blue"


def _to_view(p: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> plot axes (x, depth, up)."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


class _Figure:
    """The two panels and their artists; :meth:`draw` sets them to one frame."""

    def __init__(self, result: LiftResult, max_hypotheses: int = 5):
        plt = _pyplot()
        self.result, self.plt = result, plt
        self.fig = plt.figure(figsize=(8, 4), dpi=80)
        self.ax2 = self.fig.add_subplot(1, 2, 1)
        self.ax3 = self.fig.add_subplot(1, 2, 2, projection="3d")
        w, h = result.settings["image_size"]
        self.ax2.set_xlim(0, w)
        self.ax2.set_ylim(h, 0)
        self.ax2.set_aspect("equal")
        self.sk2 = skeleton_lib.get_skeleton(result.keypoints.target)
        self.ax2.set_title(f"2D input ({self.sk2.name.upper()}-17)", fontsize=9)
        r = 0.9  # metres around the root
        self.ax3.set_xlim(-r, r)
        self.ax3.set_ylim(-r, r)
        self.ax3.set_zlim(-r, r)
        self.ax3.set_box_aspect((1, 1, 1))
        self.ax3.set_xlabel("x (m)", fontsize=7)
        self.ax3.set_ylabel("depth (m)", fontsize=7)
        self.ax3.tick_params(labelsize=6)
        for axis in (self.ax3.xaxis, self.ax3.yaxis, self.ax3.zaxis):
            axis.set_ticks([-0.5, 0.0, 0.5])
        self.ax3.view_init(elev=12, azim=-65)
        self.ax3.set_title(f"3D ({result.aggregation}, H={result.hypotheses.shape[1]})", fontsize=9)
        bones, self.bones2 = _bones(_SK), _bones(self.sk2)
        self.lines2 = [
            self.ax2.plot([], [], color=_colour(j, self.sk2), lw=2)[0] for _, j in self.bones2
        ]
        self.missing = self.ax2.plot([], [], "x", color="k", ms=6)[0]
        nh = min(max_hypotheses, result.hypotheses.shape[1])
        self.hyp_lines = [
            [self.ax3.plot([], [], [], color="0.45", lw=1.0, alpha=0.6)[0] for _ in bones]
            for _ in range(nh if nh > 1 else 0)
        ]
        self.lines3 = [self.ax3.plot([], [], [], color=_colour(j), lw=2.5)[0] for _, j in bones]
        self.bones = bones
        self.label = self.fig.suptitle("", fontsize=9)

    def _set3(self, lines, pose: np.ndarray) -> None:
        v = _to_view(pose)
        for line, (p, j) in zip(lines, self.bones, strict=True):
            line.set_data(v[[p, j], 0], v[[p, j], 1])
            line.set_3d_properties(v[[p, j], 2])

    def draw(self, t: int):
        kp = self.result.keypoints
        xy = kp.xy[t]
        for line, (p, j) in zip(self.lines2, self.bones2, strict=True):
            line.set_data(xy[[p, j], 0], xy[[p, j], 1])
        miss = kp.missing[t]
        self.missing.set_data(xy[miss, 0], xy[miss, 1])
        for lines, hyp in zip(self.hyp_lines, self.result.hypotheses[t], strict=False):
            self._set3(lines, hyp)
        self._set3(self.lines3, self.result.poses_3d[t])
        self.label.set_text(f"frame {int(kp.frames[t])}  track {kp.track_id}")
        hyps = [x for lines in self.hyp_lines for x in lines]
        return [*self.lines2, self.missing, *self.lines3, *hyps]


def _writer(path: str, fps: float):
    from matplotlib import animation

    if path.lower().endswith(".mp4"):
        try:
            import imageio_ffmpeg
        except ImportError:
            raise RenderError(
                f"{path}: writing .mp4 needs ffmpeg from imageio-ffmpeg "
                "(pip install 'pose_jax[render]'); or render to a .gif."
            ) from None
        import matplotlib

        matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
        return animation.FFMpegWriter(fps=fps)
    if path.lower().endswith(".gif"):
        return animation.PillowWriter(fps=fps)
    raise RenderError(f"{path}: unknown animation type; expected .mp4 or .gif.")


def render_animation(
    result: LiftResult, path: str, *, fps: float = 25.0, stride: int = 1, max_frames: int = 0
) -> int:
    """Writes the animation (every ``stride``-th frame, at most ``max_frames`` if > 0).

    Returns the number of frames written.
    """
    from matplotlib import animation

    frames = list(range(0, result.num_frames, max(1, int(stride))))
    if max_frames > 0:
        frames = frames[:max_frames]
    writer = _writer(path, fps)
    fig = _Figure(result)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        anim = animation.FuncAnimation(fig.fig, fig.draw, frames=frames, blit=False)
        anim.save(path, writer=writer)
    finally:
        fig.plt.close(fig.fig)
    return len(frames)


def render_frame(result: LiftResult, path: str, frame: int = 0) -> None:
    """One frame as a still image (PNG)."""
    if not 0 <= int(frame) < result.num_frames:
        raise RenderError(
            f"{path}: frame {frame} to render; expected 0 <= frame < {result.num_frames}."
        )
    fig = _Figure(result)
    try:
        fig.draw(int(frame))
        fig.fig.savefig(path, dpi=80)
    finally:
        fig.plt.close(fig.fig)
