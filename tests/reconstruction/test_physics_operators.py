"""Adjoint identities and invariants of the physics operators (NumPy)."""

import numpy as np
import pytest

from reconstruction.physics import modes, modulus, patches, propagation


def _rand_complex(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_scatter_add_is_the_adjoint_of_patch_extraction():
    rng = np.random.default_rng(1)
    obj = _rand_complex(rng, 40, 50)
    rows, cols = rng.integers(0, 40 - 8, 30), rng.integers(0, 50 - 8, 30)
    idx = patches.window_indices(np, rows, cols, 8, obj.shape[1])
    y = _rand_complex(rng, 30, 8, 8)
    lhs = np.vdot(patches.extract_patches(np, obj, idx), y)
    rhs = np.vdot(obj, patches.scatter_add_patches(np, obj.shape, y, idx))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


class _NotNumpy:
    """NumPy under another name: makes scatter_add_patches take its bincount path (the one CuPy runs)."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_scatter_add_slices_on_numpy_equal_the_bincount_path_for_real_complex_and_broadcast_patches():
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 40 - 8, 30), rng.integers(0, 50 - 8, 30)
    idx = patches.window_indices(np, rows, cols, 8, 50)
    for y in (_rand_complex(rng, 30, 8, 8), rng.random((30, 8, 8), dtype=np.float32),
              np.broadcast_to(rng.random((8, 8), dtype=np.float32), (30, 8, 8))):
        fast = patches.scatter_add_patches(np, (40, 50), y, idx)
        ref = patches.scatter_add_patches(_NotNumpy(), (40, 50), y, idx)
        assert fast.dtype == ref.dtype and fast.shape == (40, 50)
        np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)


def test_extracted_window_is_the_object_slice():
    rng = np.random.default_rng(2)
    obj = _rand_complex(rng, 20, 20)
    idx = patches.window_indices(np, np.array([3]), np.array([5]), 6, 20)
    np.testing.assert_array_equal(patches.extract_patches(np, obj, idx)[0], obj[3:9, 5:11])


def test_propagation_is_unitary_and_backward_is_its_adjoint():
    rng = np.random.default_rng(3)
    x, y = _rand_complex(rng, 4, 16, 16), _rand_complex(rng, 4, 16, 16)
    fx = propagation.forward(np, x)
    assert np.allclose(np.linalg.norm(fx), np.linalg.norm(x), rtol=1e-5)
    assert abs(np.vdot(fx, y) - np.vdot(x, propagation.backward(np, y))) < 1e-3 * abs(np.vdot(fx, y))
    assert np.allclose(propagation.backward(np, fx), x, atol=1e-5)


def test_modulus_projection_imposes_the_measured_amplitude_and_is_idempotent():
    rng = np.random.default_rng(4)
    far = _rand_complex(rng, 3, 2, 8, 8)  # (N, modes, n, n)
    target = rng.uniform(0.5, 2.0, (3, 8, 8)).astype(np.float32)
    projected = far * modulus.modulus_factor(np, modulus.modal_amplitude(np, far), target, None)[:, None]
    assert np.allclose(modulus.modal_amplitude(np, projected), target, rtol=1e-5)
    again = projected * modulus.modulus_factor(np, modulus.modal_amplitude(np, projected), target, None)[:, None]
    assert np.allclose(again, projected, rtol=1e-5)


def test_masked_pixels_are_left_unconstrained():
    rng = np.random.default_rng(5)
    far = _rand_complex(rng, 1, 1, 4, 4)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    factor = modulus.modulus_factor(np, modulus.modal_amplitude(np, far), np.zeros((1, 4, 4), np.float32), valid)
    assert factor[0, 0, 0] == 1.0 and np.all(factor[0][valid] == 0)


def test_mode_orthogonalisation_gives_orthogonal_modes_with_the_same_density_matrix():
    rng = np.random.default_rng(6)
    probe = _rand_complex(rng, 3, 8, 8)
    ortho = modes.orthogonalize_modes(np, probe)
    flat, oflat = probe.reshape(3, -1), ortho.reshape(3, -1)
    gram = oflat.conj() @ oflat.T
    assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-3 * np.abs(gram).max())
    powers = np.real(np.diag(gram))
    assert np.all(np.diff(powers) <= 1e-3)  # strongest first
    assert np.allclose(flat.T @ flat.conj(), oflat.T @ oflat.conj(), atol=1e-3 * np.abs(flat).max() ** 2)


def test_seeded_extra_modes_are_weak_and_orthogonal():
    rng = np.random.default_rng(7)
    probe = np.zeros((3, 16, 16), np.complex64)
    probe[0] = _rand_complex(rng, 16, 16)
    seeded = modes.seed_extra_modes(np, probe, rng)
    power = np.sum(np.abs(seeded) ** 2, axis=(1, 2))
    assert power[1] > 0 and power[2] > 0 and power[1] < 0.2 * power[0]
    flat = seeded.reshape(3, -1)
    assert abs(np.vdot(flat[0], flat[1])) < 1e-3 * power[0]


def test_relaxed_projection_stops_on_the_noise_ball_and_leaves_patterns_inside_alone():
    rng = np.random.default_rng(4)
    a = rng.uniform(1, 5, size=(3, 16, 16)).astype(np.float32)
    model = a.copy()
    model[0] *= 1.5  # far outside the ball
    model[1] *= 1.01  # inside a 5 % ball
    model[2] *= 1.2  # outside
    relax = 0.05
    f = modulus.relaxed_modulus_factor(np, model, a, None, relax)
    new = model * f
    e = np.sum((new - a) ** 2, axis=(-2, -1))
    bound = relax**2 * np.sum(a**2, axis=(-2, -1))
    np.testing.assert_allclose(e[[0, 2]], bound[[0, 2]], rtol=1e-4)  # moved exactly onto the ball
    np.testing.assert_array_equal(f[1], np.ones_like(f[1]))  # already inside: untouched
    exact = modulus.relaxed_modulus_factor(np, model, a, None, 0.0)
    np.testing.assert_allclose(model * exact, a, rtol=1e-5)  # relax 0 is the exact projection


@pytest.mark.parametrize("shape", [(7, 9, 9), (7, 3, 8, 10)])
def test_roll_windows_equals_a_roll_of_each_moved_window_and_leaves_the_others(shape):
    rng = np.random.default_rng(3)
    stack = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    shifts = np.zeros((shape[0], 2), dtype=np.int64)
    shifts[[1, 4, 6]] = [[1, -2], [-1, 0], [3, 12]]  # 12 > width: wraps as np.roll does
    expected = stack.copy()
    for j in range(shape[0]):
        expected[j] = np.roll(stack[j], tuple(shifts[j]), axis=(-2, -1))
    patches.roll_windows(np, stack, shifts)
    assert np.array_equal(stack, expected)
    patches.roll_windows(np, stack, np.zeros_like(shifts))  # nothing moved: nothing changes
    assert np.array_equal(stack, expected)
