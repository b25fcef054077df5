"""DiffPose, frame-based (GCNdiff refining a GraFormer lifter) on Human3.6M (GONGJIA0208/Diffpose).

``--config=configs/diffpose_frame_h36m.py:keypoints=cpn`` (default) or ``keypoints=gt``;
``dataset=synthetic`` trains on ``synthetic_pose`` instead (``noisy`` for cpn, ``default``
for gt); ``stage=lifter`` trains the GraFormer initialiser, which the default
``stage=diffusion`` needs at evaluation::

  python -m launch.train --config=configs/diffpose_frame_h36m.py:stage=lifter --workdir=/runs/lift
  python -m launch.train --config=configs/diffpose_frame_h36m.py \
      --config.model.lifter_path=/runs/lift --workdir=/runs/diffpose_frame

As the reference: uv noise scales from a per-joint GMM fitted to the training
split's detected - ground-truth 2D (constant [0.1, 0.1, 1, 1, 1] when the 2D is
ground truth), x0's uv is the projected ground truth (+ the sampled component's
mean), refinement from t = 12 (CPN; T_test 24, S 2) or t = 6 (GT; 12, 2), no flip TTA.
``,runlocal`` makes a CPU smoke run on ``synthetic_pose/tiny``.
"""

from configs import common

_REFINE = {"cpn": (24, 2), "gt": (12, 2)}  # (T_test, S)


def get_config(arg: str | None = None):
    args, c = common.diffpose_experiment(arg, system="diffpose_frame")
    c.diffusion.uv_noise = "gmm"
    c.diffusion.train_uv = "gt"
    c.eval.num_timesteps, c.eval.num_iterations = _REFINE[args.keypoints]
    if args.stage == "lifter":
        common.diffpose_lifter_stage(c)
    if args.runlocal:
        common.shrink_diffpose_for_cpu(c)
    return c
