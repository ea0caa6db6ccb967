"""Bad input gets a clear TypeError/ValueError naming the argument and index: never a crash,
never a lost update, and never a partial step. (Every optimizer's invalid hyperparameters and
non-finite gradients: tests/test_optim_db.py.)"""


import numpy as np
import pytest

from fastopt import functional as F
from fastopt.optim import SGD, Adam


def fresh(n=2, size=8, dtype=np.float32):
    return [np.ones(size, dtype) for _ in range(n)]


def test_grad_shape_mismatch():
    opt = Adam(fresh())
    with pytest.raises(ValueError, match=r"grad\[1\]: shape \(4, 2\) does not match param\[1\]"):
        opt.step([np.ones(8, np.float32), np.ones((4, 2), np.float32)])


def test_grad_dtype_mismatch():
    opt = Adam(fresh())
    with pytest.raises(TypeError, match=r"grad\[0\]: dtype float64 does not match"):
        opt.step([np.ones(8), np.ones(8, np.float32)])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex64, bool])
def test_unsupported_param_dtypes(dtype):
    with pytest.raises(TypeError, match=r"param\[0\]: dtype .* is not supported"):
        Adam([np.ones(8, dtype)])


def test_big_endian_params_are_refused():
    with pytest.raises(TypeError, match=r"param\[0\]"):
        Adam([np.ones(8, ">f4")])


def test_strided_param_and_grad_stepped_through_exact_copies():
    buf = np.ones(16, np.float32)
    opt = SGD([buf[::2]], lr=0.5, momentum=0.9)  # not dense: stepped through a dense copy
    for _ in range(2):
        opt.step([np.full(8, 2.0, np.float32)])
    np.testing.assert_allclose(buf[::2], 1 - 0.5 * 2 - 0.5 * (0.9 * 2 + 2), rtol=1e-6)
    np.testing.assert_array_equal(buf[1::2], 1.0)  # the memory in between is untouched
    opt = SGD(fresh(), lr=0.5)
    opt.step([np.ones(8, np.float32), np.full(16, 2.0, np.float32)[::2]])
    np.testing.assert_array_equal(opt.param_groups[0]["params"][1], 0.0)
    read_only = np.ones(16, np.float32)[::2]
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"param\[0\]: array is read-only"):
        SGD([read_only])
    with pytest.raises(ValueError, match=r"grad\[0\]: shape \(4,\) does not match"):
        opt.step([np.ones(8, np.float32)[::2], np.ones(8, np.float32)])


def test_dense_permuted_params_step_in_their_layout():
    # a transposed (Fortran-order) param is dense: stepped in place with a grad and state of
    # the same layout; a grad of another layout is copied into the param's layout first
    p = np.arange(12, dtype=np.float32).reshape(3, 4).T
    want = p - 0.5 * (p + 1)
    opt = SGD([p], lr=0.5, momentum=0.9)
    opt.step([np.asfortranarray(p + 1)])
    np.testing.assert_array_equal(p, want)
    assert opt.state[0][0]["momentum_buffer"].strides == p.strides
    want = p - 0.5 * (0.9 * opt.state[0][0]["momentum_buffer"] + p)
    opt.step([np.ascontiguousarray(p)])
    np.testing.assert_allclose(p, want, rtol=1e-6)
    assert p.flags.f_contiguous and opt.state[0][0]["momentum_buffer"].strides == p.strides


def test_read_only_param_but_read_only_grad_is_fine():
    p = np.ones(8, np.float32)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"param\[0\]: array is read-only"):
        Adam([p])
    params = fresh(1)
    g = np.ones(8, np.float32)
    g.flags.writeable = False
    SGD(params, lr=0.5).step([g])
    np.testing.assert_array_equal(params[0], 0.5)


def test_grad_aliasing_its_param_or_another_grad():
    params = fresh()
    opt = SGD(params)
    with pytest.raises(ValueError, match=r"share memory"):
        opt.step([params[0], np.ones(8, np.float32)])
    g = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"grad\[0\] and grad\[1\] share memory"):
        opt.step([g, g])
    big = np.ones(12, np.float32)
    with pytest.raises(ValueError, match=r"grad\[0\] and grad\[1\] share memory"):
        opt.step([big[:8], big[4:]])
    np.testing.assert_array_equal(params[0], 1.0)  # nothing was stepped


def test_params_sharing_memory_across_groups():
    p = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        Adam([{"params": [p]}, {"params": [p[:4]]}])


def test_functional_state_aliasing():
    params, grads = fresh(), fresh()
    m = fresh()
    with pytest.raises(ValueError, match=r"exp_avg\[0\] and exp_avg_sq\[0\] share memory"):
        F.adam_(params, grads, m, [m[0], np.zeros(8, np.float32)], step=1)


def test_list_lengths_and_empty_lists():
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(ValueError, match=r"grads: expected 2 arrays"):
        Adam(fresh()).step(fresh(3))
    with pytest.raises(ValueError, match=r"grad: has 1 entries but param has 2"):
        F.sgd_(fresh(), fresh(1))
    with pytest.raises(ValueError, match=r"param: empty list"):
        F.sgd_([], [])


def test_non_arrays():
    with pytest.raises(TypeError, match=r"param\[0\]: expected an array"):
        SGD([[1.0, 2.0]])
    with pytest.raises(TypeError, match=r"grad\[1\]: expected an array"):
        SGD(fresh()).step([np.ones(8, np.float32), "nope"])


def test_invalid_hyperparameter_set_between_steps_is_caught_before_stepping():
    params = fresh()
    opt = Adam(params)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.step(fresh())
    np.testing.assert_array_equal(params[0], 1.0)


def test_unknown_hyperparameter_in_a_group():
    with pytest.raises(TypeError, match="unknown hyperparameters for Adam: momentum"):
        Adam([{"params": fresh(), "momentum": 0.9}])


def test_bad_grad_in_a_later_group_steps_nothing():
    a, b = fresh(), fresh()
    opt = SGD([{"params": a}, {"params": b}], lr=0.5)
    with pytest.raises(ValueError, match=r"grad\[1\]: shape"):
        opt.step([np.ones(8, np.float32)] * 0 + fresh() + [np.ones(8, np.float32),
                                                          np.ones(3, np.float32)])
    for p in a + b:
        np.testing.assert_array_equal(p, 1.0)


def test_load_state_dict_from_another_class_or_shape():
    sd = SGD(fresh(), momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="from a SGD optimizer, not Adam"):
        Adam(fresh()).load_state_dict(sd)
    sd.pop("optimizer")
    opt = SGD(fresh(), momentum=0.9)
    opt.step(fresh())
    sd = opt.state_dict()
    sd.pop("optimizer")
    with pytest.raises(ValueError, match="unknown hyperparameters .* for Adam"):
        Adam(fresh()).load_state_dict(sd)
    with pytest.raises(ValueError, match="has shape"):
        SGD(fresh(size=4), momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="state_dict has 2 parameters, this optimizer has 3"):
        SGD(fresh(3), momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="param groups"):
        SGD([{"params": fresh(1)}, {"params": fresh(1)}], momentum=0.9).load_state_dict(sd)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'gpu-ish'"):
        Adam(fresh(), backend="gpu-ish")


def test_state_keys_of_another_optimizer():
    opt = SGD(fresh(), momentum=0.9)
    opt.step(fresh())
    sd = opt.state_dict()
    sd.pop("optimizer")
    for group in sd["param_groups"]:
        for key in ("momentum", "dampening", "nesterov"):
            group.pop(key)
    with pytest.raises(ValueError, match=r"keys \['momentum_buffer'\] do not belong to Adam"):
        Adam(fresh()).load_state_dict(sd)
