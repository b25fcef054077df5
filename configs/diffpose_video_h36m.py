"""DiffPose, video-based (per-frame GCNdiff refining a MixSTE lifter) on Human3.6M.

As GONGJIA0208/Diffpose_video.

``--config=configs/diffpose_video_h36m.py:keypoints=cpn`` (default) or ``keypoints=gt``;
``dataset=synthetic`` uses ``synthetic_pose`` (``noisy`` for cpn, ``default`` for gt).
``stage=lifter`` trains the MixSTE initialiser on 243-frame clips (MPJPE, D3DP's
optimiser settings); the default ``stage=diffusion`` trains GCNdiff on single frames
and needs the initialiser at evaluation (``--config.model.lifter_path``: a run
directory, or ``launch.convert --model=diffpose_video_mixste`` output)::

  python -m launch.train --config=configs/diffpose_video_h36m.py:stage=lifter --workdir=/runs/mix
  python -m launch.train --config=configs/diffpose_video_h36m.py \
      --config.model.lifter_path=/runs/mix --workdir=/runs/diffpose_video

As the reference: constant noise scale [0.5, 0.5, 1, 1, 1], x0's uv the input 2D,
243-frame evaluation windows, the MixSTE output flip-averaged and not re-rooted,
one DDIM step at t = 0 for CPN (T_test 6, S 1), t = 6, 0 for GT (12, 2), no flip
TTA in the refinement. ``,runlocal``: CPU smoke run (27-frame windows).
"""

from configs import common

_REFINE = {"cpn": (6, 1), "gt": (12, 2)}  # (T_test, S)


def get_config(arg: str | None = None):
    args, c = common.diffpose_experiment(arg, system="diffpose_video")
    c.data.num_frames = 243  # evaluation windows (and the lifter stage's clips)
    c.model.lifter = "mixste_lifter"
    c.model.lifter_kwargs.num_frames = 243
    c.diffusion.noise_scale = (0.5, 0.5, 1.0, 1.0, 1.0)
    c.diffusion.uv_noise = "constant"
    c.diffusion.train_uv = "input"
    c.diffusion.reroot_init = False
    c.eval.num_timesteps, c.eval.num_iterations = _REFINE[args.keypoints]
    c.eval.init_flip_tta = True
    c.eval.batch_size = 4  # 243-frame windows per call
    if args.stage == "lifter":
        # MixSTE trained as D3DP trains its denoiser: clips, flip duplication, AdamW.
        d3dp = common.d3dp_base()
        c.model.stage = "lifter"
        c.data.flip = "duplicate"
        c.data.batch_size = 4
        c.optim = d3dp.optim
        c.train.num_epochs = 160  # our choice; the reference ships mixste_cpn_243f.bin
    if args.runlocal:
        common.shrink_diffpose_for_cpu(c)
        c.data.num_frames = 27
        c.model.lifter_kwargs.num_frames = 27
        c.eval.batch_size = 2
        if args.stage == "lifter":
            c.data.batch_size = 4
    return c
