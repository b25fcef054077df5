"""monoMotionDiff (cross-channel embedding + context guidance) on Human3.6M (REFERENCE.md 6).

``--config=configs/mmdiff_h36m.py:keypoints=cpn`` (default) or ``keypoints=gt``;
``dataset=synthetic`` trains on ``synthetic_pose`` (``noisy`` for cpn, ``default`` for
gt); ``stage=lifter`` trains the GraFormer initialiser (the same as DiffPose-frame's,
so one lifter run serves both), which the default ``stage=diffusion`` needs::

  python -m launch.train --config=configs/mmdiff_h36m.py:stage=lifter --workdir=/runs/lift
  python -m launch.train --config=configs/mmdiff_h36m.py \
      --config.model.lifter_path=/runs/lift --workdir=/runs/mmdiff

As the reference: train and test on the same 2D source, random flips in training,
constant noise scale [0.1, 0.1, 1, 1, 1], 800 epochs, refinement from t = 6
(T_test 12, S 2) with flip TTA over the whole chain. ``,runlocal``: CPU smoke run.
"""

from configs import common

_H36M = {"cpn": "h36m_pose/cpn_ft_h36m_dbb", "gt": "h36m_pose/gt"}
_SYNTHETIC = {"cpn": "synthetic_pose/noisy", "gt": "synthetic_pose/default"}


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, keypoints="cpn", dataset="h36m", stage="diffusion", runlocal=False)
    if args.keypoints not in _H36M:
        raise ValueError(f"keypoints={args.keypoints!r}; expected one of {sorted(_H36M)}.")
    if args.dataset not in ("h36m", "synthetic"):
        raise ValueError(f"dataset={args.dataset!r}; expected 'h36m' or 'synthetic'.")
    if args.stage not in ("lifter", "diffusion"):
        raise ValueError(f"stage={args.stage!r}; expected 'lifter' or 'diffusion'.")
    c = common.diffpose_base()
    c.system = "mmdiff"
    c.data.dataset = (_H36M if args.dataset == "h36m" else _SYNTHETIC)[args.keypoints]
    c.data.flip = "random"
    c.model.name = "mmdiff"
    c.diffusion.noise_scale = (0.1, 0.1, 1.0, 1.0, 1.0)
    c.diffusion.uv_noise = "constant"
    c.diffusion.train_uv = "input"
    c.train.num_epochs = 800
    c.eval.num_timesteps, c.eval.num_iterations = 12, 2
    c.eval.flip_tta = True
    if args.stage == "lifter":
        common.diffpose_lifter_stage(c)
    if args.runlocal:
        common.shrink_diffpose_for_cpu(c)
    return c
