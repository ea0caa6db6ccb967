import math

import numpy as np
import pytest
from tolerances import assert_close
from trajectories import SHAPES, grad_stream

from fastopt import reference
from fastopt.clip import clip_grad_norm_, clip_grad_value_


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_matches_reference(backend, dtype, norm_type, max_norm):
    grads = next(grad_stream(SHAPES["mixed"], dtype, 1))
    expected = [g.copy() for g in grads]
    norm = clip_grad_norm_(grads, max_norm, norm_type, backend=backend)
    expected_norm = reference.clip_grad_norm(expected, max_norm, norm_type)
    assert norm == pytest.approx(expected_norm, rel=1e-12 if dtype == np.float64 else 1e-6)
    for a, b in zip(grads, expected, strict=True):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_mixed_dtypes_are_clipped_by_their_joint_norm(backend, norm_type, max_norm):
    """float32 and float64 grads in one list: one table per dtype, one norm over all of them.
    The largest magnitudes sit in the float64 grads, which are not the list's first dtype."""
    grads = next(grad_stream(SHAPES["mixed"], np.float64, 1))
    grads = [g.astype(np.float32) if k % 2 == 0 else g * 10 for k, g in enumerate(grads)]
    expected = [g.copy() for g in grads]
    norm = clip_grad_norm_(grads, max_norm, norm_type, backend=backend)
    expected_norm = reference.clip_grad_norm(expected, max_norm, norm_type)
    assert norm == pytest.approx(expected_norm, rel=1e-6)
    for k, (a, b) in enumerate(zip(grads, expected, strict=True)):
        assert a.dtype == b.dtype
        assert_close(a, b, a.dtype, f"grad {k}")


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_clip_grad_norm_matches_torch(dtype, norm_type):
    torch = pytest.importorskip("torch")
    grads = next(grad_stream(SHAPES["mixed"], dtype, 1))
    tparams = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
               for g in grads]
    for t, g in zip(tparams, grads, strict=True):
        t.grad = torch.from_numpy(g.copy())
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.0, norm_type)
    norm = clip_grad_norm_(grads, 1.0, norm_type)
    assert norm == pytest.approx(float(tnorm), rel=1e-5 if dtype == np.float32 else 1e-12)
    for g, t in zip(grads, tparams, strict=True):
        assert_close(g, t.grad.numpy(), dtype)


def test_clip_grad_value_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    grads = next(grad_stream(SHAPES["mixed"], dtype, 1))
    grads[0][0] = np.nan
    tparams = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
               for g in grads]
    for t, g in zip(tparams, grads, strict=True):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_(tparams, 0.7)
    clip_grad_value_(grads, 0.7)
    for g, t in zip(grads, tparams, strict=True):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_nonfinite_norm():
    grads = [np.ones(10, np.float32), np.array([1.0, np.inf], np.float32)]
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(grads[0], 1.0)  # untouched
    grads[1][1] = np.nan
    assert math.isnan(clip_grad_norm_(grads, 1.0))
    assert np.isnan(grads[0]).all()  # scaled by NaN, as torch does


def test_empty_list_and_bad_arguments():
    assert clip_grad_norm_([], 1.0) == 0.0
    clip_grad_value_([], 1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_([np.ones(3)], 1.0, norm_type=0)
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value_([np.ones(3)], -1.0)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grad\[0\]: array is read-only"):
        clip_grad_norm_([ro], 1.0)
    with pytest.raises(ValueError, match="share memory"):
        g = np.ones(4)
        clip_grad_value_([g, g], 1.0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_grad_norm_clipper_on_the_host_matches_clip_grad_norm_and_torch(norm_type):
    """GradNormClipper (the capturable clip; CPU arrays are clipped on the host): the norm and
    the grads of clip_grad_norm_ bit for bit, over several calls (the workspace reused) and
    mixed dtypes, the norm as a one-element float64 array of the grads' framework."""
    torch = pytest.importorskip("torch")
    from fastopt.clip import GradNormClipper

    clipper = GradNormClipper(0.5, norm_type)
    previous = None
    for step in range(3):
        grads = next(grad_stream(SHAPES["mixed"], np.float32, 1, seed=step))
        grads[1] = grads[1].astype(np.float64)
        same = [g.copy() for g in grads]
        norm = clipper(grads)
        assert isinstance(norm, np.ndarray) and norm.shape == (1,) and norm.dtype == np.float64
        assert norm[0] == clip_grad_norm_(same, 0.5, norm_type)
        for a, b in zip(grads, same, strict=True):
            np.testing.assert_array_equal(a, b)
        work = clipper._work
        assert step == 0 or work is previous
        previous = work
    # torch scales every grad by a coefficient of the first one's dtype: one dtype here
    fresh = next(grad_stream(SHAPES["mixed"], np.float32, 1, seed=9))
    tgrads = [torch.from_numpy(g) for g in fresh]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for t, g in zip(tparams, tgrads, strict=True):
        t.grad = g.clone()
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 0.5, norm_type)
    norm = clipper(tgrads)
    assert isinstance(norm, torch.Tensor) and norm.dtype == torch.float64
    assert float(norm[0]) == pytest.approx(float(tnorm), rel=1e-5)  # torch sums in float32
    for g, t in zip(tgrads, tparams, strict=True):
        assert_close(g.numpy(), t.grad.numpy(), g.numpy().dtype)


def test_grad_norm_clipper_arguments():
    from fastopt.clip import GradNormClipper

    assert GradNormClipper(1.0)([]) == 0.0
    with pytest.raises(ValueError, match="norm_type"):
        GradNormClipper(1.0, 0.0)
    with pytest.raises(ValueError, match="max_norm is NaN"):
        GradNormClipper(math.nan)
    with pytest.raises(TypeError, match=r"grad\[0\]"):
        GradNormClipper(1.0)([np.zeros(3, np.int32)])
