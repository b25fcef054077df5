"""Per-joint Gaussian mixtures for DiffPose's GMM forward process (GONGJIA0208/Diffpose).

DiffPose never released its fitting code; its data files hold per-joint
kernels ``(weight, mean_uv, var_uv)`` and training picks a kernel per joint,
uses its mean as the 2D input and its "variance" entry as the per-joint scale
of the uv noise (``eps' = eps * scale``). Here the mixture is fitted by EM on
keypoint residuals (detected - ground truth), independently for every joint,
with diagonal covariances:

* :func:`fit_gmm` -- EM in JAX (``lax.scan`` over iterations, ``vmap`` over
  joints), k-means++ or random-pick initialisation from a key, a variance
  floor, and the mean log-likelihood of every iteration.
* :func:`sample_gmm_noise` -- draws residual noise ``[..., J, D]``.
* :func:`select_gmm_component` / :func:`gmm_noise_scale` -- DiffPose's sampled
  kernel: component index, its mean and its scale per sample and joint.

Shapes: ``J`` joints, ``K`` components, ``D`` coordinates (2 for keypoints).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp

from pose_jax import _checks

INITS = ("kmeans++", "random")
SCALE_KINDS = ("std", "variance")


@flax.struct.dataclass
class GMMParams:
    """Diagonal Gaussian mixture per joint.

    Attributes:
      weights: ``[..., J, K]`` mixture weights (sum to 1 over K).
      means: ``[..., J, K, D]``.
      variances: ``[..., J, K, D]`` per-coordinate variances (not std).
    """

    weights: jax.Array
    means: jax.Array
    variances: jax.Array

    @property
    def num_components(self) -> int:
        return self.weights.shape[-1]


def _component_log_prob(x: jax.Array, means: jax.Array, variances: jax.Array) -> jax.Array:
    """``log N(x | mu_k, diag var_k)``: x ``[N, D]``, means/vars ``[K, D]`` -> ``[N, K]``."""
    diff = x[:, None, :] - means[None]
    return -0.5 * jnp.sum(
        jnp.log(2.0 * math.pi * variances)[None] + diff * diff / variances[None], axis=-1
    )


def gmm_log_likelihood(params: GMMParams, data: jax.Array) -> jax.Array:
    """Per-point log density under each joint's mixture.

    Args:
      params: :class:`GMMParams` with ``weights [J, K]``.
      data: ``[N, J, D]``.

    Returns:
      ``[N, J]`` float32 log densities.
    """
    fn = "gmm_log_likelihood"
    J, _K = _checks.shape_of(params.weights)
    D = _checks.shape_of(params.means)[-1]
    _checks.check_trailing(fn, "data", data, (J, D), min_ndim=3)

    return _log_likelihood(params, jnp.asarray(data, jnp.float32))


@jax.jit
def _log_likelihood(params: GMMParams, data: jax.Array) -> jax.Array:
    def per_joint(x, w, m, v):
        return jax.nn.logsumexp(jnp.log(w)[None] + _component_log_prob(x, m, v), axis=-1)

    return jax.vmap(per_joint, in_axes=(1, 0, 0, 0), out_axes=1)(
        data, params.weights, params.means, params.variances
    )


def _kmeanspp_init(key: jax.Array, x: jax.Array, w: jax.Array, num_components: int) -> jax.Array:
    """k-means++ seeding over points ``x [N, D]`` with sample weights ``w [N]`` -> ``[K, D]``."""
    keys = jax.random.split(key, num_components)
    logw = jnp.log(w)  # -inf for zero-weight points: never picked
    first = jax.random.categorical(keys[0], logw)
    centers = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum((x - x[first]) ** 2, axis=-1)

    def body(k, carry):
        centers, d2 = carry
        # D^2 weighting; uniform over the weighted points when every point coincides
        # with a chosen centre (then any pick is as good as another).
        score = d2 * w
        logits = jnp.where(jnp.sum(score) > 0, jnp.log(score), logw)
        idx = jax.random.categorical(keys[k], logits)
        centers = centers.at[k].set(x[idx])
        d2 = jnp.minimum(d2, jnp.sum((x - x[idx]) ** 2, axis=-1))
        return centers, d2

    centers, _ = jax.lax.fori_loop(1, num_components, body, (centers, d2))
    return centers


def _random_init(key: jax.Array, x: jax.Array, w: jax.Array, num_components: int) -> jax.Array:
    """``K`` distinct data points picked at random (weighted by ``w``) -> ``[K, D]``."""
    p = w / jnp.sum(w)
    idx = jax.random.choice(key, x.shape[0], (num_components,), replace=False, p=p)
    return x[idx]


def _fit_one_joint(key, x, w, *, num_components, num_iters, var_floor, init):
    """EM on one joint: ``x [N, D]``, ``w [N]``. Returns (weights, means, vars, ll [iters])."""
    total_w = jnp.sum(w)
    data_mean = jnp.sum(w[:, None] * x, axis=0) / total_w
    data_var = jnp.sum(w[:, None] * (x - data_mean) ** 2, axis=0) / total_w
    init_fn = _kmeanspp_init if init == "kmeans++" else _random_init
    means = init_fn(key, x, w, num_components)
    variances = jnp.broadcast_to(jnp.maximum(data_var, var_floor), means.shape)
    weights = jnp.full((num_components,), 1.0 / num_components, x.dtype)

    def em_step(carry, _):
        weights, means, variances = carry
        # E-step: responsibilities and the log-likelihood of the current parameters.
        log_r = jnp.log(weights)[None] + _component_log_prob(x, means, variances)
        ll_point = jax.nn.logsumexp(log_r, axis=-1)
        resp = jnp.exp(log_r - ll_point[:, None]) * w[:, None]
        ll = jnp.sum(ll_point * w) / total_w
        # M-step (diagonal covariance, variance floored). A component that lost
        # all its mass keeps its previous mean/variance so nothing divides by 0.
        nk = jnp.sum(resp, axis=0)
        alive = nk > 1e-8 * total_w
        safe_nk = jnp.where(alive, nk, 1.0)
        new_means = (resp.T @ x) / safe_nk[:, None]
        diff = x[:, None, :] - new_means[None]
        new_vars = jnp.einsum("nk,nkd->kd", resp, diff * diff) / safe_nk[:, None]
        new_means = jnp.where(alive[:, None], new_means, means)
        new_vars = jnp.maximum(jnp.where(alive[:, None], new_vars, variances), var_floor)
        new_weights = nk / total_w
        new_weights = new_weights / jnp.sum(new_weights)
        return (new_weights, new_means, new_vars), ll

    (weights, means, variances), lls = jax.lax.scan(
        em_step, (weights, means, variances), None, length=num_iters
    )
    return weights, means, variances, lls


def fit_gmm(
    key: jax.Array,
    data: jax.Array,
    num_components: int,
    *,
    num_iters: int = 100,
    var_floor: float = 1e-6,
    init: str = "kmeans++",
    sample_weights: jax.Array | None = None,
) -> tuple[GMMParams, jax.Array]:
    """Fits a diagonal GMM per joint by EM.

    The EM loop runs as one compiled program (jitted inside, cached per shape and
    ``num_components``/``num_iters``/``init``); the function also traces inside a
    caller's ``jit`` as long as those three and ``var_floor`` are Python values.
    Joint ``j`` is initialised from ``fold_in(key, j)``, so the fit of a joint
    does not depend on the other joints.

    Args:
      key: PRNG key for the initialisation (deterministic given the key).
      data: ``[N, J, D]`` samples, e.g. detected-minus-GT 2D keypoints.
      num_components: ``K >= 1``, ``K <= N``.
      num_iters: EM iterations (``>= 1``).
      var_floor: lower bound of every variance (keeps a collapsed component finite).
      init: ``'kmeans++'`` (D^2-weighted seeding) or ``'random'`` (K distinct data points).
      sample_weights: optional ``[N]`` non-negative weights (e.g. a validity mask).

    Returns:
      ``(params, log_likelihood)``: :class:`GMMParams` with ``weights [J, K]``,
      ``means [J, K, D]``, ``variances [J, K, D]``; ``log_likelihood [J, num_iters]``
      is the mean per-point log-likelihood at the start of each iteration, which
      EM keeps non-decreasing.
    """
    fn = "fit_gmm"
    shape = _checks.check_trailing(fn, "data", data, (None, None, None))
    if len(shape) != 3:
        raise ValueError(f"{fn}: argument 'data' has shape {shape}; expected [N, J, D].")
    n, _J, _D = shape
    for name, v, lo in (("num_components", num_components, 1), ("num_iters", num_iters, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{fn}: argument '{name}' is {v!r}; expected an int >= {lo}.")
    if num_components > n:
        raise ValueError(
            f"{fn}: argument 'num_components' is {num_components}; "
            f"expected at most N={n} data points."
        )
    _checks.check_choice(fn, "init", init, INITS)
    if not var_floor > 0:
        raise ValueError(f"{fn}: argument 'var_floor' is {var_floor}; expected > 0.")
    _checks.check_finite(fn, "data", data)
    x = jnp.asarray(data, jnp.float32)
    if sample_weights is None:
        w = jnp.ones((n,), jnp.float32)
    else:
        if _checks.shape_of(sample_weights) != (n,):
            raise ValueError(
                f"{fn}: argument 'sample_weights' has shape {_checks.shape_of(sample_weights)}; "
                f"expected [N] = ({n},)."
            )
        w = jnp.asarray(sample_weights, jnp.float32)
    return _fit_all_joints(key, x, w, jnp.float32(var_floor), num_components, num_iters, init)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _fit_all_joints(key, x, w, var_floor, num_components, num_iters, init):
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(x.shape[1]))
    fit = lambda k, xj: _fit_one_joint(  # noqa: E731
        k, xj, w, num_components=num_components, num_iters=num_iters, var_floor=var_floor, init=init
    )
    weights, means, variances, lls = jax.vmap(fit, in_axes=(0, 1))(keys, x)
    return GMMParams(weights=weights, means=means, variances=variances), lls


def _batch_shape(fn: str, shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, Sequence) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(
            f"{fn}: argument 'shape' is {shape!r}; expected a tuple of non-negative ints."
        )
    return tuple(shape)


def select_gmm_component(
    key: jax.Array, params: GMMParams, shape: Sequence[int] | int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Picks one component per sample and joint, ``k ~ Cat(weights[j])``.

    Args:
      key: PRNG key.
      params: :class:`GMMParams`; ``weights [..., J, K]`` whose leading dims
        broadcast against ``shape`` (e.g. per-frame mixtures ``[B, J, K]`` with
        ``shape=(B,)``).
      shape: sample batch shape ``S``.

    Returns:
      ``(index [*S, J] int32, mean [*S, J, D], variance [*S, J, D])`` of the picked components.
    """
    fn = "select_gmm_component"
    S = _batch_shape(fn, shape)
    J, K = _checks.shape_of(params.weights)[-2:]
    D = _checks.shape_of(params.means)[-1]
    logits = jnp.log(jnp.maximum(params.weights, 0.0))
    try:
        full = jnp.broadcast_shapes(logits.shape[:-1], (*S, J))
    except ValueError:
        full = None
    if full != (*S, J):
        raise ValueError(
            f"{fn}: mixture weights of shape {logits.shape} do not broadcast to the sample shape "
            f"{S} + (J={J},); expected weights [..., J, K] with leading dims broadcastable to {S}."
        )
    idx = jax.random.categorical(key, logits, axis=-1, shape=(*S, J)).astype(jnp.int32)
    means = jnp.broadcast_to(params.means, (*S, J, K, D))
    variances = jnp.broadcast_to(params.variances, (*S, J, K, D))
    pick = lambda a: jnp.take_along_axis(a, idx[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
    return idx, pick(means), pick(variances)


def sample_gmm_noise(key: jax.Array, params: GMMParams, shape: Sequence[int] | int) -> jax.Array:
    """Draws per-joint mixture noise: ``k ~ Cat(pi_j)``, then ``N(mu_jk, diag var_jk)``.

    Args:
      key: PRNG key.
      params: :class:`GMMParams` (``weights [..., J, K]``).
      shape: sample batch shape ``S``.

    Returns:
      ``[*S, J, D]`` float32 samples.
    """
    k_cat, k_norm = jax.random.split(key)
    _, mean, var = select_gmm_component(k_cat, params, shape)
    return mean + jnp.sqrt(var) * jax.random.normal(k_norm, mean.shape, mean.dtype)


def gmm_noise_scale(
    key: jax.Array, params: GMMParams, shape: Sequence[int] | int, *, kind: str = "std"
) -> tuple[jax.Array, jax.Array]:
    """DiffPose's sampled-kernel noise scale per sample and joint.

    DiffPose multiplies the uv noise by the sampled kernel's stored "variance"
    entry and uses the kernel's mean as the 2D input; ``kind='variance'``
    reproduces that literally, ``kind='std'`` (default) uses ``sqrt(variance)``,
    the scale that makes ``eps * scale`` follow the component's spread.

    Args:
      key: PRNG key.
      params: :class:`GMMParams`.
      shape: sample batch shape ``S``.
      kind: ``'std'`` or ``'variance'``.

    Returns:
      ``(scale [*S, J, D], mean [*S, J, D])`` of the picked components; concatenate
      ``scale`` with ones for the xyz channels to get the uvxyz noise scale.
    """
    _checks.check_choice("gmm_noise_scale", "kind", kind, SCALE_KINDS)
    _, mean, var = select_gmm_component(key, params, shape)
    return (jnp.sqrt(var) if kind == "std" else var), mean
