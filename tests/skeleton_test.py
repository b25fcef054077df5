"""Tests for pose_jax.skeleton: joint tables (VideoPose3D common/h36m_dataset.py) and flips."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose_jax import skeleton

LAYOUTS = [("h36m", 0), ("3dhp", 14)]

# Human3.6M 32-joint mocap sides, as VideoPose3D's h36m_skeleton declares them.
H36M_32_LEFT = (6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23)
H36M_32_RIGHT = (1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31)


def _reduce_parents(parents, keep):
    """Parents of the kept joints: walk up to the nearest kept ancestor, then re-index."""
    new_index = {old: new for new, old in enumerate(keep)}
    out = []
    for j in keep:
        p = parents[j]
        while p != -1 and p not in new_index:
            p = parents[p]
        out.append(-1 if p == -1 else new_index[p])
    return tuple(out)


@pytest.mark.parametrize(("name", "root"), LAYOUTS)
def test_tables_are_consistent(name, root):
    sk = skeleton.get_skeleton(name)
    assert sk.name == name
    assert sk.num_joints == 17
    assert len(sk.joint_names) == len(set(sk.joint_names)) == 17
    assert len(sk.parents) == 17
    assert sk.root == root
    assert sk.parents[root] == -1
    assert [j for j, p in enumerate(sk.parents) if p == -1] == [root]
    # Left and right: same size, disjoint, never the root, and mirrored by name.
    assert len(sk.joints_left) == len(sk.joints_right) == 6
    assert not set(sk.joints_left) & set(sk.joints_right)
    assert root not in sk.joints_left + sk.joints_right
    for left, right in zip(sk.joints_left, sk.joints_right, strict=True):
        assert sk.joint_names[left].startswith("l_")
        assert sk.joint_names[right] == "r_" + sk.joint_names[left][2:]
    # Sides map onto sides under the parent relation (a left limb hangs off a left
    # joint or the trunk), so the flip permutation is a tree automorphism.
    perm = sk.flip_permutation
    for j, p in enumerate(sk.parents):
        if p >= 0:
            assert sk.parents[perm[j]] == perm[p]


@pytest.mark.parametrize(("name", "root"), LAYOUTS)
def test_edges_form_a_spanning_tree(name, root):
    sk = skeleton.get_skeleton(name)
    assert len(sk.edges) == 16
    assert len({frozenset(e) for e in sk.edges}) == 16
    assert {frozenset(e) for e in sk.edges} == {
        frozenset((j, p)) for j, p in enumerate(sk.parents) if p >= 0
    }
    # 16 edges on 17 nodes and connected => a tree.
    seen, stack = {root}, [root]
    while stack:
        a = stack.pop()
        for i, j in sk.edges:
            for u, v in ((i, j), (j, i)):
                if u == a and v not in seen:
                    seen.add(v)
                    stack.append(v)
    assert seen == set(range(17))
    # Every parent chain reaches the root without a cycle.
    for j in range(17):
        k, steps = j, 0
        while sk.parents[k] != -1:
            k, steps = sk.parents[k], steps + 1
            assert steps <= 17
        assert k == root
    adj = sk.adjacency()
    np.testing.assert_array_equal(adj, adj.T)
    assert adj.sum() == 32 and np.trace(adj) == 0
    np.testing.assert_array_equal(sk.adjacency(self_loops=True), adj + np.eye(17))


def test_h36m_tables_match_reference():
    sk = skeleton.H36M
    assert sk.parents == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
    assert sk.joints_left == (4, 5, 6, 11, 12, 13)
    assert sk.joints_right == (1, 2, 3, 14, 15, 16)
    # The DiffPose / monoMotionDiff GCN edge list, in its order.
    assert sk.edges == (
        (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (9, 10),
        (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
    )  # fmt: skip
    three = skeleton.MPI_INF_3DHP
    assert three.parents == (1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1)
    assert three.joints_left == (5, 6, 7, 11, 12, 13)
    assert three.joints_right == (2, 3, 4, 8, 9, 10)


def test_get_skeleton_names_and_aliases():
    assert skeleton.get_skeleton("H36M") is skeleton.H36M
    assert skeleton.get_skeleton("human36m") is skeleton.H36M
    assert skeleton.get_skeleton("mpi_inf_3dhp") is skeleton.MPI_INF_3DHP
    assert set(skeleton.available_skeletons()) == {"h36m", "3dhp"}
    assert skeleton.H36M.index("thorax") == 8
    assert skeleton.MPI_INF_3DHP.index("pelvis") == 14


def test_get_skeleton_unknown_name():
    with pytest.raises(
        ValueError,
        match=r"get_skeleton: unknown layout 'halpe'; expected one of 'h36m', '3dhp', 'coco'",
    ):
        skeleton.get_skeleton("halpe")
    with pytest.raises(ValueError, match=r"Skeleton\[h36m\]\.index: unknown joint 'tail'"):
        skeleton.H36M.index("tail")


def test_coco_is_a_2d_input_layout_with_its_own_flip():
    coco = skeleton.get_skeleton("coco17")
    assert coco is skeleton.COCO and "coco" in skeleton.keypoint_layouts()
    assert "coco" not in skeleton.available_skeletons()  # no model predicts 3D in it
    assert coco.joint_names[coco.flip_permutation[5]] == "r_shoulder"
    assert coco.joint_names[coco.flip_permutation[0]] == "nose"
    # Its mirror differs from Human3.6M's, which is why a COCO-input model needs both.
    assert not np.array_equal(coco.flip_permutation, skeleton.H36M.flip_permutation)
    x = np.random.default_rng(0).normal(size=(3, 17, 2)).astype(np.float32)
    np.testing.assert_array_equal(skeleton.flip_pose(skeleton.flip_pose(x, "coco"), "coco"), x)


def test_h36m_32_to_17_index_tables():
    keep, removed = skeleton.H36M_32_TO_17, skeleton.H36M_32_REMOVED
    assert len(keep) == 17 and len(removed) == 15
    assert sorted(keep + removed) == list(range(32))
    assert len(skeleton.H36M_32_PARENTS) == 32


def test_reduced_32_joint_tree_matches_h36m_parents():
    reduced = _reduce_parents(skeleton.H36M_32_PARENTS, skeleton.H36M_32_TO_17)
    # Walking up the mocap tree hangs both shoulders (32-joint 17 and 25) off the
    # spine (32-joint 12 -> 17-joint 7): their mocap parents 16 and 24 are dropped
    # joints whose parent is 12. VideoPose3D then rewires them explicitly
    # ("Rewire shoulders to the correct parents": parents[11] = parents[14] = 8),
    # which is what H36M_PARENTS holds. Everything else agrees with the walk.
    assert reduced[11] == reduced[14] == 7
    rewired = list(reduced)
    rewired[11] = rewired[14] = 8
    assert tuple(rewired) == skeleton.H36M_PARENTS


def test_reduced_32_joint_sides_match_h36m_sides():
    keep = skeleton.H36M_32_TO_17
    left = tuple(keep.index(j) for j in H36M_32_LEFT if j in keep)
    right = tuple(keep.index(j) for j in H36M_32_RIGHT if j in keep)
    assert left == skeleton.H36M.joints_left
    assert right == skeleton.H36M.joints_right


def test_reduce_h36m_32_to_17():
    x = np.arange(2 * 5 * 32 * 3, dtype=np.float32).reshape(2, 5, 32, 3)
    out = skeleton.reduce_h36m_32_to_17(x)
    chex.assert_shape(out, (2, 5, 17, 3))
    for new, old in enumerate(skeleton.H36M_32_TO_17):
        np.testing.assert_array_equal(out[..., new, :], x[..., old, :])
    with pytest.raises(
        ValueError,
        match=(
            r"reduce_h36m_32_to_17: argument 'positions' has shape \(5, 17, 3\); "
            r"expected \[\.\.\., 32, \*\]"
        ),
    ):
        skeleton.reduce_h36m_32_to_17(x[0, :, :17])


@pytest.mark.parametrize("name", ["h36m", "3dhp"])
@pytest.mark.parametrize("dim", [2, 3])
def test_flip_pose_twice_is_identity(name, dim):
    x = np.random.default_rng(0).normal(size=(4, 9, 17, dim)).astype(np.float32)
    once = skeleton.flip_pose(x, name)
    chex.assert_shape(once, x.shape)
    assert once.dtype == x.dtype
    np.testing.assert_array_equal(skeleton.flip_pose(once, name), x)


@pytest.mark.parametrize("name", ["h36m", "3dhp"])
def test_flip_pose_mirrors_x_and_swaps_sides(name):
    sk = skeleton.get_skeleton(name)
    x = np.random.default_rng(1).normal(size=(3, 17, 3)).astype(np.float32)
    out = np.asarray(skeleton.flip_pose(x, sk))
    for left, right in zip(sk.joints_left, sk.joints_right, strict=True):
        np.testing.assert_array_equal(out[:, left, 0], -x[:, right, 0])
        np.testing.assert_array_equal(out[:, right, 0], -x[:, left, 0])
        np.testing.assert_array_equal(out[:, left, 1:], x[:, right, 1:])
        np.testing.assert_array_equal(out[:, right, 1:], x[:, left, 1:])
    middle = sorted(set(range(17)) - set(sk.joints_left) - set(sk.joints_right))
    assert sk.root in middle
    np.testing.assert_array_equal(out[:, middle, 0], -x[:, middle, 0])
    np.testing.assert_array_equal(out[:, middle, 1:], x[:, middle, 1:])


def test_flip_pose_under_jit_and_on_jax_arrays():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 243, 17, 3)), jnp.float32)
    eager = skeleton.flip_pose(x, "h36m")
    jitted = jax.jit(lambda a: skeleton.flip_pose(a, "h36m"))(x)
    assert isinstance(jitted, jax.Array)
    np.testing.assert_array_equal(jitted, eager)
    np.testing.assert_array_equal(jitted, skeleton.flip_pose(np.asarray(x), "h36m"))
    g = jax.grad(lambda a: jnp.sum(skeleton.flip_pose(a, "h36m")[..., 0]))(x)
    np.testing.assert_array_equal(g, -jnp.ones_like(x) * jnp.array([1, 0, 0]))


def test_flip_pose_bad_input():
    with pytest.raises(
        ValueError,
        match=r"flip_pose: argument 'x' has shape \(2, 16, 3\); expected \[\.\.\., 17, \*\]",
    ):
        skeleton.flip_pose(np.ones((2, 16, 3)), "h36m")
    with pytest.raises(ValueError, match="unknown layout 'body25'"):
        skeleton.flip_pose(np.ones((17, 3)), "body25")
