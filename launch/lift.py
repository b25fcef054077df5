r"""Lifts your own 2D keypoints to 3D with a trained run or a converted checkpoint.

  python -m launch.lift --demo_input=runs/demo/walk_coco.json     # a synthetic MMPose file
  python -m launch.lift --run=runs/quickstart --input=runs/demo/walk_coco.json \
      --layout=coco --image_size=1000,1002 --output=runs/demo/walk_3d.npz \
      --render=runs/demo/walk.gif
  python -m launch.lift --converted=/models/d3dp_h36m --input=alphapose-results.json \
      --image_size=1920,1080 --num_hypotheses=5 --num_iterations=5 --output=out.npz

Inputs (``pose_jax.lift.formats``): MMPose inferencer JSON, AlphaPose JSON,
OpenPose ``--write_json`` directories, VideoPose3D ``data_2d_custom`` npz (which
records the image size), ``.npy``/``.npz`` arrays; ``--layout`` is
``coco|halpe|openpose|h36m`` or ``auto``. Writes ``OUTPUT.npz`` (``poses_3d [T, 17, 3]``,
``hypotheses [T, H, 17, 3]``, ``spread [T, 17]``, ``keypoints_2d [T, 17, 2]``, ...)
and ``OUTPUT.json`` (settings, what was missing and interpolated); with several
people (``--track=all``) one pair per person, ``OUTPUT_track<ID>.npz``.
``--render=OUT.gif|OUT.mp4`` animates the 2D input beside the 3D skeleton.
"""

from __future__ import annotations

import os
import time

from absl import app, flags, logging

from launch import cli, host_memory
from pose_jax.errors import InputError

_RUN = flags.DEFINE_string("run", None, "A launch.train run directory (WORKDIR).")
_CONVERTED = flags.DEFINE_string("converted", None, "A launch.convert output directory.")
_LIFTER = flags.DEFINE_string(
    "lifter", None, "DiffPose-family --converted denoisers: the lifter's converted dir or run."
)
_INPUT = flags.DEFINE_string("input", None, "Keypoint file (.json, .npz, .npy) or directory.")
_LAYOUT = flags.DEFINE_string("layout", "auto", "coco | halpe | openpose | h36m | auto.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", None, "W,H in pixels (default: from the file).")
_INTRINSICS = flags.DEFINE_list(
    "intrinsics", None, "fx,fy,cx,cy[,k1,k2,k3,p1,p2] pixels: J-Agg and a fitted trajectory."
)
_TRACK = flags.DEFINE_string("track", None, "Person track id, or 'all' (default: longest).")
_THRESHOLD = flags.DEFINE_float("threshold", 0.3, "Confidences below this are missing.")
_H = flags.DEFINE_integer("num_hypotheses", None, "H (default: the run's eval block).")
_K = flags.DEFINE_integer("num_iterations", None, "K (default: the run's eval block).")
_SEED = flags.DEFINE_integer("seed", None, "Sampling seed (default: the run's eval.seed).")
_OUTPUT = flags.DEFINE_string("output", None, "OUTPUT.npz (a .json is written beside it).")
_RENDER = flags.DEFINE_string(
    "render", None, "Animation to write (OUT.gif, OUT.mp4), or one frame (OUT.png)."
)
_RENDER_FRAME = flags.DEFINE_integer("render_frame", None, "OUT.png: the frame (default: middle).")
_RENDER_STRIDE = flags.DEFINE_integer("render_stride", 1, "Render every n-th frame.")
_RENDER_MAX = flags.DEFINE_integer("render_max_frames", 0, "Render at most this many (0: all).")
_FPS = flags.DEFINE_float("fps", 25.0, "Frames per second of the animation.")
_DEMO = flags.DEFINE_string(
    "demo_input", None, "Write a synthetic walk as MMPose-style COCO-17 JSON to this path."
)
_DEMO_FRAMES = flags.DEFINE_integer("demo_frames", 300, "Frames of the demo sequence (50 fps).")


class LiftUsageError(InputError, ValueError):
    """Flags that do not describe one lift (no model, two models, no input)."""


def write_demo(path: str, num_frames: int) -> str:
    """A synthetic walk (synthetic_pose motion, Human3.6M S9 camera 0) as MMPose COCO JSON.

    Beside it, ``<stem>_truth.npz`` holds the true camera-frame 3D (metres) and the camera.
    """
    import numpy as np

    from data_pipelines.synthetic_pose import detector_keypoints as dk
    from pose_jax import camera as camera_lib
    from pose_jax.lift import writers

    world, cam = dk.demo_motion(num_frames)
    xy, scores = dk.detector_keypoints(world, cam, "coco")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writers.write_mmpose_json(path, xy[None], scores[None])
    truth = camera_lib.world_to_camera(world, cam.orientation, cam.translation)
    intr = [*cam.focal_length, *cam.center]
    stem = os.path.splitext(path)[0]
    np.savez(
        stem + "_truth.npz",
        poses_3d=truth - truth[:, :1],
        trajectory=truth[:, 0],
        intrinsics=np.asarray(intr),
        image_size=np.asarray([cam.res_w, cam.res_h]),
    )
    print(
        f"wrote {path} ({num_frames} frames, COCO-17, MMPose inferencer layout) and "
        f"{stem}_truth.npz; image size {cam.res_w},{cam.res_h}; intrinsics "
        f"{','.join(f'{v:.1f}' for v in intr)}"
    )
    return path


def _make_lifter():
    from launch.lift_api import Lifter

    if bool(_RUN.value) == bool(_CONVERTED.value):
        raise LiftUsageError("lift: pass exactly one of --run=WORKDIR and --converted=DIR.")
    if _RUN.value:
        return Lifter.from_run(_RUN.value)
    return Lifter.from_converted(_CONVERTED.value, lifter=_LIFTER.value)


def _numbers(values, name: str, cast=float):
    if values is None:
        return None
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise LiftUsageError(f"lift: --{name}={','.join(values)}; expected numbers.") from None


def _out_path(output: str, track_id: str, many: bool) -> str:
    stem = output[:-4] if output.endswith(".npz") else output
    return f"{stem}_track{track_id}.npz" if many else stem + ".npz"


def _report(result, seconds: float) -> str:
    kp, miss = result.keypoints, result.keypoints.missing_report()
    gaps = ", ".join(f"{j} {len(r)} runs" for j, r in list(miss["joints"].items())[:6])
    return (
        f"track {kp.track_id}: {result.num_frames} frames, H={result.hypotheses.shape[1]}, "
        f"{result.aggregation}, mean spread {result.summary()['mean_spread_mm']:.1f} mm, "
        f"{seconds:.1f} s ({result.num_frames / max(seconds, 1e-9):.0f} frames/s); "
        f"interpolated {int(kp.missing.sum())} joint-frames on "
        f"{miss['frames_with_missing_joints']} frames{': ' + gaps if gaps else ''}"
    )


def lift_main() -> list:
    """The whole command: read, lift every chosen track, save, render; returns the results."""
    from pose_jax import lift

    if _DEMO.value:
        write_demo(_DEMO.value, _DEMO_FRAMES.value)
        if not _INPUT.value:
            return []
    if not _INPUT.value or not _OUTPUT.value:
        raise LiftUsageError("lift: pass --input=FILE and --output=OUT.npz.")
    size = _numbers(_IMAGE_SIZE.value, "image_size", int)
    intrinsics = _numbers(_INTRINSICS.value, "intrinsics")

    people = lift.select_tracks(
        lift.read_tracks(_INPUT.value, _LAYOUT.value), _TRACK.value, source=_INPUT.value
    )  # the file is read once; each person is converted to the model's layout below

    def prepare(target: str) -> list:
        return [lift.prepare(t, threshold=_THRESHOLD.value, target=target) for t in people]

    tracks = prepare("h36m")
    for kp in tracks:  # before the model is built: bad sizes fail fast
        lift.lifter.check_image_size(kp, size)
    lifter = _make_lifter()
    if lifter.keypoints != "h36m":  # e.g. a COCO-input model: its own layout
        tracks = prepare(lifter.keypoints)
    results = []
    for kp in tracks:
        start = time.perf_counter()
        result = lifter.lift(
            kp,
            image_size=size,
            intrinsics=intrinsics,
            seed=_SEED.value,
            num_hypotheses=_H.value,
            num_iterations=_K.value,
        )
        seconds = time.perf_counter() - start
        npz, js = result.save(_out_path(_OUTPUT.value, kp.track_id, len(tracks) > 1))
        print(f"{_report(result, seconds)}\nwrote {npz} and {js}", flush=True)
        results.append(result)
    if _RENDER.value:
        _render(results[0])
    return results


def _render(result) -> None:
    from pose_jax.lift import render

    if _RENDER.value.lower().endswith(".png"):
        frame = result.num_frames // 2 if _RENDER_FRAME.value is None else _RENDER_FRAME.value
        render.render_frame(result, _RENDER.value, frame)
        print(f"wrote {_RENDER.value} (frame {frame})")
    else:
        n = render.render_animation(
            result,
            _RENDER.value,
            fps=_FPS.value,
            stride=_RENDER_STRIDE.value,
            max_frames=_RENDER_MAX.value,
        )
        print(f"wrote {_RENDER.value} ({n} frames)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    cli.run_main("launch.lift", lift_main)


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc("launch.lift")
    app.run(main, flags_parser=cli.parse_flags)
