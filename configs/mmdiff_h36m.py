"""monoMotionDiff (cross-channel embedding + context guidance) on Human3.6M.

As jjkislele/monoMotionDiff.

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


def get_config(arg: str | None = None):
    args, c = common.diffpose_experiment(arg, system="mmdiff")
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
