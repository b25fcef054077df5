"""Running state kept beside a model's weights (BatchNorm statistics), and how it is updated.

Most models here are weights only: their params are the Linen ``'params'``
collection, a nested dict. A model that also keeps running state (KTPFormer's
BatchNorm layers, collection ``'batch_stats'``) has *stateful params*: the Flax
variables ``{'params': weights, 'batch_stats': statistics}`` as one pytree, so
checkpoints, EMA, sharding, evaluation and converters carry the statistics
without knowing about them.

The training-mode forward pass computes the new statistics
(``module.apply(..., mutable=['batch_stats'])``). They reach the training step
without any system passing them along: :func:`pose_jax.models.make_model_fns`'s
``apply_fn(train=True)`` hands them to :func:`record`, and the training step
evaluates the system's ``loss_fn`` inside :func:`collect`, which returns them as
an output of the same trace (an auxiliary output of ``jax.value_and_grad``). The
step then differentiates and updates only the weights (:func:`split`) and stores
the recorded statistics (:func:`join`); the optimizer (and weight decay) never
sees them, as PyTorch's optimizers never see buffers.

A training-mode call outside :func:`collect` (a test calling ``loss_fn``) uses
the batch's statistics and drops the update, as a PyTorch ``train()`` forward
whose result is discarded. One training-mode call per ``loss_fn`` may record
(a second one raises: which update should win is the system's decision), and it
must not sit under a transformation with its own trace (``lax.scan``,
``jax.checkpoint``) inside the loss.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

# The Linen collections that hold running state (never trained).
STATE_COLLECTIONS = ("batch_stats",)


def is_stateful(params: Any) -> bool:
    """Whether ``params`` are Flax variables ``{'params', <state collections>}``."""
    if not isinstance(params, Mapping) or "params" not in params:
        return False
    others = set(params) - {"params"}
    return bool(others) and others <= set(STATE_COLLECTIONS)


def from_variables(variables: Mapping[str, Any]) -> Any:
    """``module.init``'s variables as params: the weights alone, or stateful params.

    Raises:
      ValueError: a collection that is neither weights nor running state.
    """
    unknown = sorted(set(variables) - {"params", *STATE_COLLECTIONS})
    if unknown:
        raise ValueError(
            f"model_state.from_variables: the model creates collection(s) {unknown}; "
            f"expected only 'params' and {list(STATE_COLLECTIONS)}."
        )
    state = {k: variables[k] for k in STATE_COLLECTIONS if k in variables}
    return join(variables["params"], state or None)


def split(params: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(weights, running state or None)``; stateless params are all weights."""
    if not is_stateful(params):
        return params, None
    return params["params"], {k: params[k] for k in STATE_COLLECTIONS if k in params}


def join(weights: Any, state: Mapping[str, Any] | None) -> Any:
    """Inverse of :func:`split`."""
    if state is None:
        return weights
    return {"params": weights, **state}


def weights(params: Any) -> Any:
    """The trained part of ``params`` (all of it for stateless params)."""
    return split(params)[0]


@dataclasses.dataclass
class Recorded:
    """What the training-mode forward pass of one :func:`collect` block recorded."""

    state: dict[str, Any] | None = None


_ACTIVE: contextvars.ContextVar[Recorded | None] = contextvars.ContextVar(
    "pose_jax_model_state", default=None
)


@contextlib.contextmanager
def collect() -> Iterator[Recorded]:
    """Collects the running state a training-mode forward pass records inside the block."""
    box = Recorded()
    token = _ACTIVE.set(box)
    try:
        yield box
    finally:
        _ACTIVE.reset(token)


def record(state: Mapping[str, Any]) -> None:
    """Hands a training-mode call's new running state to the enclosing :func:`collect`.

    Without one the update is dropped.

    Raises:
      ValueError: a second training-mode call records inside the same block.
    """
    box = _ACTIVE.get()
    if box is None:
        return
    if box.state is not None:
        raise ValueError(
            "model_state.record: two training-mode calls of a model with running state "
            "(BatchNorm) in one loss_fn; expected one (its statistics are the update)."
        )
    box.state = dict(state)
