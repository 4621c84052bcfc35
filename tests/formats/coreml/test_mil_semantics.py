"""The MIL reference evaluator computes what Core ML documents, where that is not what torch computes.

Each test builds a one-op MIL program, evaluates it on an edge-case input and asserts the result
coremltools' op documentation gives (``coremltools.converters.mil.mil.ops.defs``); where the op has
a ``value_inference`` (coremltools' constant folding), the result is compared with it too. Where the
documentation leaves a result undefined, the evaluator must refuse, naming the op and why. The
table in docs/formats.md ("Core ML vs torch: documented semantic differences") names these tests.
"""

from __future__ import annotations

import pytest

import parity._triton_first  # noqa: F401  (before coremltools, which imports tensorflow)

pytest.importorskip("coremltools")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import coremltools as ct  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from parity.formats.coreml.mil_ref import Evaluator, MilEvaluationError, UnsupportedOpError  # noqa: E402

_DTYPES = {np.dtype(np.float32): types.fp32, np.dtype(np.float16): types.fp16, np.dtype(np.int32): types.int32}


def evaluate(build, *inputs: np.ndarray, opset=None) -> np.ndarray:
    """Build `build(*vars)` as a program over `inputs` and evaluate it with parity's evaluator."""
    specs = [mb.TensorSpec(shape=a.shape, dtype=_DTYPES[a.dtype]) for a in inputs]
    prog = mb.program(input_specs=specs, opset_version=opset)(build)
    evaluator = Evaluator(prog)
    return next(iter(evaluator.run(dict(zip(evaluator.input_names, inputs))).values()))


def folded(build, *inputs: np.ndarray, opset=None) -> np.ndarray:
    """What coremltools' own value_inference gives for `build` on constant `inputs`."""
    seen = {}

    def body(unused):
        seen["value"] = build(*inputs).val
        return unused

    mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=opset)(body)
    assert seen["value"] is not None, "coremltools did not fold the op"
    return np.asarray(seen["value"])


def refused(build, *inputs, opset=None, error=UnsupportedOpError) -> str:
    with pytest.raises(error) as info:
        evaluate(build, *inputs, opset=opset)
    return str(info.value)


f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
i32 = lambda *v: np.array(v, np.int32)  # noqa: E731

# ---------------------------------------------------------------------------------- rounding and division


def test_round_sends_halves_to_the_even_neighbour():
    """MIL documents ``0.5 -> 0``; coremltools folds with np.round (half to even), as torch.round does."""
    x = f32(-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.6)
    got = evaluate(lambda x: mb.round(x=x), x)
    np.testing.assert_array_equal(got, f32(-2, -2, 0, 0, 2, 2, 3))
    np.testing.assert_array_equal(got, folded(lambda x: mb.round(x=x), x))
    assert got[5] != np.floor(x[5] + 0.5)  # not C's round-half-away-from-zero


def test_float_floor_div_is_the_floor_of_the_quotient_not_torchs_floor_division():
    """floor_div is documented as ``x / y`` rounded towards -inf: 1 / 0.1 is 10 in fp32, so 10.
    torch (and coremltools' own constant folding, Python's //) divide through fmod and give 9."""
    x, y = f32(1.0, -7.0, 7.0), f32(0.1, 2.0, -2.0)
    got = evaluate(lambda x, y: mb.floor_div(x=x, y=y), x, y)
    np.testing.assert_array_equal(got, f32(10, -4, -4))
    assert torch.div(torch.from_numpy(x), torch.from_numpy(y), rounding_mode="floor")[0] == 9
    assert folded(lambda x, y: mb.floor_div(x=x, y=y), x, y)[0] == 9


def test_integer_floor_div_and_mod_round_towards_negative_infinity():
    """Integer floor_div floors (not C's truncation) and mod takes the divisor's sign, as coremltools folds."""
    x, y = i32(-7, 7, -7, 7), i32(2, -2, 3, -3)
    for op, want in ((mb.floor_div, i32(-4, -4, -3, -3)), (mb.mod, i32(1, -1, 2, -2))):
        got = evaluate(lambda x, y: op(x=x, y=y), x, y)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, folded(lambda x, y: op(x=x, y=y), x, y))
    assert torch.fmod(torch.tensor(-7), 3) == -1  # torch's other remainder, which MIL's mod is not


def test_float_mod_takes_the_sign_of_the_divisor():
    x, y = f32(-7.5, 7.5), f32(2.0, -2.0)
    got = evaluate(lambda x, y: mb.mod(x=x, y=y), x, y)
    np.testing.assert_array_equal(got, f32(0.5, -0.5))
    np.testing.assert_array_equal(got, folded(lambda x, y: mb.mod(x=x, y=y), x, y))


@pytest.mark.parametrize("op", ["floor_div", "mod", "real_div"])
def test_integer_division_by_zero_is_refused(op):
    message = refused(lambda x, y: getattr(mb, op)(x=x, y=y), i32(4, 6), i32(2, 0))
    assert f"({op})" in message and "by zero" in message and "not documented" in message


def test_integer_real_div_with_a_remainder_is_refused_and_an_exact_one_is_exact():
    np.testing.assert_array_equal(evaluate(lambda x, y: mb.real_div(x=x, y=y), i32(-48, 12), i32(3, -4)),
                                  i32(-16, -3))
    assert "with a remainder" in refused(lambda x, y: mb.real_div(x=x, y=y), i32(-7, 8), i32(2, 4))


# ---------------------------------------------------------------------------------- int32 arithmetic


@pytest.mark.parametrize("build, inputs", [
    (lambda x, y: mb.add(x=x, y=y), (i32(2**31 - 1, 0), i32(1, 0))),
    (lambda x, y: mb.mul(x=x, y=y), (i32(65536, 2), i32(32768, 2))),
    (lambda x, y: mb.sub(x=x, y=y), (i32(-2**31, 0), i32(1, 0))),
    (lambda x, y: mb.floor_div(x=x, y=y), (i32(-2**31, 4), i32(-1, 2))),
    (lambda x: mb.reduce_sum(x=x, axes=[0]), (i32(2**30, 2**30, 1),)),
    (lambda x: mb.abs(x=x), (i32(-2**31, 3),)),
], ids=["add", "mul", "sub", "floor_div", "reduce_sum", "abs"])
def test_int32_overflow_is_refused_not_wrapped(build, inputs):
    """torch and NumPy wrap around on int32 overflow; Core ML documents no overflow behaviour."""
    message = refused(build, *inputs)
    assert "outside int32's range" in message and "overflow behaviour is not documented" in message


def test_int32_arithmetic_that_fits_is_exact_and_stays_int32():
    got = evaluate(lambda x, y: mb.mul(x=mb.add(x=x, y=y), y=y), i32(2**30 - 1, -5), i32(1, 3))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, i32(2**30, -6))


def test_integer_pow_with_a_negative_exponent_is_refused():
    np.testing.assert_array_equal(evaluate(lambda x, y: mb.pow(x=x, y=y), i32(-3, 2), i32(3, 10)), i32(-27, 1024))
    assert "negative exponent" in refused(lambda x, y: mb.pow(x=x, y=y), i32(2, 2), i32(1, -1))


def test_integer_reduce_mean_is_exact_or_refused():
    """An int32 mean is int32; a mean with a remainder has no documented rounding (coremltools folds by truncation)."""
    x = i32(1, 2, 3, 6).reshape(2, 2)
    np.testing.assert_array_equal(evaluate(lambda x: mb.reduce_mean(x=x, axes=[0]), x), i32(2, 4))
    assert "reduce_mean of an int32 tensor with a remainder" in refused(lambda x: mb.reduce_mean(x=x, axes=[1]), x)


# ---------------------------------------------------------------------------------- cast


def test_cast_float_to_int_truncates_towards_zero():
    x = f32(2.7, -2.7, 0.5, -0.5, 1e9)
    got = evaluate(lambda x: mb.cast(x=x, dtype="int32"), x)
    np.testing.assert_array_equal(got, i32(2, -2, 0, 0, 1_000_000_000))
    np.testing.assert_array_equal(got, folded(lambda x: mb.cast(x=x, dtype="int32"), x))


@pytest.mark.parametrize("value, why", [(3e9, "outside int32's range"), (np.nan, "NaN or infinity"),
                                        (-np.inf, "NaN or infinity")])
def test_cast_of_an_unrepresentable_float_to_int_is_refused(value, why):
    """torch gives -2147483648 for each of these (whatever the CPU's conversion gives); Core ML documents nothing."""
    message = refused(lambda x: mb.cast(x=x, dtype="int32"), f32(1.0, value))
    assert "(cast)" in message and why in message


def test_cast_to_a_narrow_integer_saturates_nowhere_it_is_refused():
    assert "outside int8's range" in refused(lambda x: mb.cast(x=x, dtype="int8"), f32(127.0, 128.0),
                                             opset=ct.target.iOS17)
    np.testing.assert_array_equal(evaluate(lambda x: mb.cast(x=x, dtype="uint16"), f32(65535.9, 0.2),
                                           opset=ct.target.iOS17), np.array([65535, 0], np.uint16))


# ---------------------------------------------------------------------------------- epsilons and activations


def test_inverse_rsqrt_log_add_their_documented_default_epsilon():
    """inverse is 1 / (x + 1e-4), rsqrt 1 / sqrt(x + 1e-12), log log(x + 1e-45): finite at 0, unlike torch."""
    zero = f32(0.0, 1.0)
    np.testing.assert_allclose(evaluate(lambda x: mb.inverse(x=x), zero), f32(1e4, 1 / (1 + 1e-4)), rtol=1e-6)
    np.testing.assert_allclose(evaluate(lambda x: mb.rsqrt(x=x), zero), f32(1e6, 1.0), rtol=1e-6)
    log = evaluate(lambda x: mb.log(x=x), zero)
    np.testing.assert_allclose(log, f32(np.log(np.float32(1e-45)), 0.0), rtol=1e-6)  # -103.28, the smallest denormal
    assert torch.log(torch.tensor(0.0)) == -np.inf and torch.reciprocal(torch.tensor(0.0)) == np.inf
    np.testing.assert_allclose(log, folded(lambda x: mb.log(x=x), zero), rtol=1e-6)


def test_thresholded_relu_keeps_a_value_equal_to_alpha():
    """MIL: x if x >= alpha; torch's F.threshold keeps only x > threshold."""
    x = f32(0.5, 0.4999, 1.0)
    got = evaluate(lambda x: mb.thresholded_relu(x=x, alpha=0.5), x)
    np.testing.assert_array_equal(got, f32(0.5, 0.0, 1.0))
    assert F.threshold(torch.from_numpy(x), 0.5, 0.0)[0] == 0.0


def test_sigmoid_hard_uses_the_programs_alpha_and_beta():
    """MIL's sigmoid_hard has no default slope: torch's hardsigmoid is the case alpha=1/6, beta=0.5."""
    x = f32(-1.0, 0.0, 1.0, 10.0)
    got = evaluate(lambda x: mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5), x)
    np.testing.assert_allclose(got, f32(0.3, 0.5, 0.7, 1.0), rtol=1e-6)
    np.testing.assert_allclose(got, folded(lambda x: mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5), x), rtol=1e-6)
    assert not np.allclose(got, F.hardsigmoid(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("build", [
    lambda x: mb.leaky_relu(x=x, alpha=0.1), lambda x: mb.elu(x=x, alpha=0.7),
    lambda x: mb.clamped_relu(x=x, alpha=0.2, beta=1.5), lambda x: mb.linear_activation(x=x, alpha=2.0, beta=-0.5),
    lambda x: mb.gelu(x=x, mode="EXACT"), lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
    lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"), lambda x: mb.softplus(x=x), lambda x: mb.erf(x=x),
], ids=["leaky_relu", "elu", "clamped_relu", "linear_activation", "gelu-EXACT", "gelu-TANH", "gelu-SIGMOID",
        "softplus", "erf"])
def test_activation_matches_coremltools_folding_at_its_edges(build):
    x = f32(-30.0, -2.0, -1e-3, 0.0, 1e-3, 1.5, 2.0, 30.0)
    np.testing.assert_allclose(evaluate(build, x), folded(build, x).astype(np.float32), rtol=2e-6, atol=1e-6)


def test_l2_norm_adds_epsilon_under_the_root():
    """x / sqrt(sum x^2 + eps), where torch's F.normalize divides by max(||x||, eps)."""
    x = np.zeros((1, 2, 2), np.float32)
    x[0, 0, 0] = 1e-3
    got = evaluate(lambda x: mb.l2_norm(x=x, epsilon=1e-6), x)
    np.testing.assert_allclose(got[0, 0, 0], 1e-3 / np.sqrt(1e-6 + 1e-6), rtol=1e-6)
    assert F.normalize(torch.from_numpy(x).reshape(1, -1), eps=1e-6)[0, 0] == 1.0


# ---------------------------------------------------------------------------------- argmax


@pytest.mark.parametrize("op", ["reduce_argmax", "reduce_argmin"])
def test_argmax_with_a_tie_is_refused(op):
    """Core ML: "in case of ties, the identity of the return value is not guaranteed"; torch returns the first."""
    x = f32(1.0, 3.0, 3.0, 1.0).reshape(1, 4)
    message = refused(lambda x: getattr(mb, op)(x=x, axis=-1), x)
    assert f"({op})" in message and "tie" in message and "not guaranteed" in message
    assert evaluate(lambda x: getattr(mb, op)(x=x, axis=-1), f32(1.0, 3.0, 2.0, 0.5).reshape(1, 4))[0] == (
        1 if op == "reduce_argmax" else 3)


def test_argmax_over_nan_is_refused():
    assert "over a NaN" in refused(lambda x: mb.reduce_argmax(x=x, axis=-1), f32(1.0, np.nan, 2.0))


# ---------------------------------------------------------------------------------- indexing


def test_gather_negative_indices_wrap_before_ios17():
    x = f32(10, 11, 12, 13)
    np.testing.assert_array_equal(evaluate(lambda x, i: mb.gather(x=x, indices=i), x, i32(-1, -4, 0)),
                                  f32(13, 10, 10))


@pytest.mark.parametrize("op", ["gather", "gather_along_axis"])
def test_negative_indices_are_out_of_bounds_from_ios17(op):
    """iOS17 gather: "negative values are considered out-of-bound" and their result is undefined."""
    message = refused(lambda x, i: getattr(mb, op)(x=x, indices=i, axis=0), f32(10, 11, 12, 13), i32(1, -1, 0, 2),
                      opset=ct.target.iOS17)
    assert f"({op})" in message and "index -1 out of bounds" in message and "iOS17 allows 0..3" in message
    assert "undefined" in message


@pytest.mark.parametrize("opset", [None, ct.target.iOS17])
def test_gather_index_past_the_end_is_refused(opset):
    message = refused(lambda x, i: mb.gather(x=x, indices=i), f32(10, 11, 12, 13), i32(4, 0), opset=opset)
    assert "index 4 out of bounds for axis 0 of size 4" in message


def test_gather_out_of_bounds_with_validate_indices_is_the_runtimes_error():
    message = refused(lambda x, i: mb.gather(x=x, indices=i, validate_indices=True), f32(10, 11), i32(2, 0),
                      opset=ct.target.iOS17, error=MilEvaluationError)
    assert "(gather)" in message and "validate_indices the Core ML runtime raises" in message


def test_slice_by_index_squeeze_mask_with_begin_mask_indexes_zero():
    """begin_mask sets begin[i] to 0, and squeeze_mask indexes at begin[i]: element 0, whatever begin says."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    build = lambda x: mb.slice_by_index(x=x, begin=[2, 1], end=[0, 3], begin_mask=[True, False],  # noqa: E731
                                        squeeze_mask=[True, False])
    got = evaluate(build, x)
    np.testing.assert_array_equal(got, x[0, 1:3])
    np.testing.assert_array_equal(got, folded(build, x))


def test_slice_by_index_masks_with_a_negative_stride_follow_numpy():
    """The docstring's masks (begin -> 0, end -> size) describe positive strides; with a negative stride
    the declared shape and coremltools' folding are NumPy's x[::-2]."""
    x = np.arange(5, dtype=np.float32)
    build = lambda x: mb.slice_by_index(x=x, begin=[0], end=[0], stride=[-2], begin_mask=[True],  # noqa: E731
                                        end_mask=[True])
    np.testing.assert_array_equal(evaluate(build, x), x[::-2])
    np.testing.assert_array_equal(folded(build, x), x[::-2])


# ---------------------------------------------------------------------------------- pooling and padding


def test_ceil_mode_drops_a_last_window_that_starts_in_the_end_padding():
    """avg_pool's documented size: ceil, minus one where the last window would start in the end padding."""
    x = f32(1, 2, 3).reshape(1, 1, 3)
    got = evaluate(lambda x: mb.max_pool(x=x, kernel_sizes=[2], strides=[2], pad_type="custom", pad=[1, 1],
                                         ceil_mode=True), x)
    np.testing.assert_array_equal(got, f32(1, 3).reshape(1, 1, 2))
    np.testing.assert_array_equal(got, F.max_pool1d(torch.from_numpy(x), 2, 2, padding=1, ceil_mode=True).numpy())


def test_ceil_mode_without_padding_keeps_a_window_past_the_input_and_it_is_refused():
    """Without padding, MIL keeps a last window that starts past the input (torch drops it); its value is not
    documented."""
    x = f32(1, 2, 3, 4, 5).reshape(1, 1, 5)
    message = refused(lambda x: mb.max_pool(x=x, kernel_sizes=[1], strides=[3], pad_type="valid", ceil_mode=True), x)
    assert "(max_pool)" in message and "holds no input element" in message
    assert F.max_pool1d(torch.from_numpy(x), 1, 3, ceil_mode=True).shape[-1] == 2


def test_a_pooling_window_of_padding_only_is_refused():
    x = f32(1, 2, 3, 4).reshape(1, 1, 4)
    for build in (lambda x: mb.max_pool(x=x, kernel_sizes=[2], strides=[2], pad_type="custom", pad=[2, 2]),
                  lambda x: mb.avg_pool(x=x, kernel_sizes=[2], strides=[2], pad_type="custom", pad=[2, 2],
                                        exclude_padding_from_average=True)):
        assert "holds no input element" in refused(build, x)


@pytest.mark.parametrize("exclude", [False, True])
def test_avg_pool_ceil_mode_divides_like_torch(exclude):
    """ceil_mode is documented as "same as PyTorch's": the overhang past the padding is not in the divisor,
    the padding is unless exclude_padding_from_average."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 6, 6)).astype(np.float32)
    got = evaluate(lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                         pad=[1, 1, 1, 1], ceil_mode=True, exclude_padding_from_average=exclude), x)
    want = F.avg_pool2d(torch.from_numpy(x), 3, 2, padding=1, ceil_mode=True, count_include_pad=not exclude)
    assert got.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)


def test_max_pool_padding_never_wins():
    x = -np.ones((1, 1, 3, 3), np.float32)
    got = evaluate(lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[1, 1], pad_type="custom",
                                         pad=[1, 1, 1, 1]), x)
    np.testing.assert_array_equal(got, -np.ones((1, 1, 3, 3), np.float32))


def test_same_padding_of_an_even_kernel_puts_the_extra_row_after():
    """conv's docstring formula puts the extra row of an even kernel's "same" padding before; its own
    same_lower line, coremltools' NeuralNetwork lowering (BOTTOM_RIGHT_HEAVY) and its torch/TF frontends put
    it after. The evaluator puts it after: x[0] is not in the first window's sum, x[3] is in the last."""
    x = f32(1, 10, 100, 1000).reshape(1, 1, 4)
    got = evaluate(lambda x: mb.conv(x=x, weight=np.ones((1, 1, 2), np.float32), pad_type="same"), x)
    np.testing.assert_array_equal(got, f32(11, 110, 1100, 1000).reshape(1, 1, 4))
    lower = evaluate(lambda x: mb.conv(x=x, weight=np.ones((1, 1, 2), np.float32), pad_type="same_lower"), x,
                     opset=ct.target.iOS16)
    np.testing.assert_array_equal(lower, f32(1, 11, 110, 1100).reshape(1, 1, 4))


# ---------------------------------------------------------------------------------- resampling


def test_upsample_bilinear_recomputes_the_scale_from_the_output_size():
    """Documented as torch's recompute_scale_factor=True: spacing Xin / Xout, not 1 / scale."""
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5)
    got = evaluate(lambda x: mb.upsample_bilinear(x=x, scale_factor_height=1.0, scale_factor_width=1.5,
                                                  align_corners=False), x)
    t = torch.from_numpy(x)
    want = F.interpolate(t, scale_factor=(1.0, 1.5), mode="bilinear", align_corners=False, recompute_scale_factor=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
    plain = F.interpolate(t, scale_factor=(1.0, 1.5), mode="bilinear", align_corners=False)
    assert not np.allclose(got, plain.numpy(), atol=1e-3)


def test_resize_bilinear_grids_are_the_documented_examples():
    """The grid points coremltools documents for Xin = 2, Xout = 5 in each sampling mode."""
    x = f32(0.0, 1.0).reshape(1, 1, 1, 2)
    grids = {"UNALIGN_CORNERS": [0, 0.1, 0.5, 0.9, 1], "STRICT_ALIGN_CORNERS": [0, 0.25, 0.5, 0.75, 1],
             "ALIGN_CORNERS": [0, 0.25, 0.5, 0.75, 1], "DEFAULT": [0, 0.4, 0.8, 1, 1],
             "OFFSET_CORNERS": [0.1, 0.3, 0.5, 0.7, 0.9]}
    for mode, grid in grids.items():
        got = evaluate(lambda x: mb.resize_bilinear(x=x, target_size_height=1, target_size_width=5,
                                                    sampling_mode=mode), x)
        np.testing.assert_allclose(got.reshape(-1), grid, atol=1e-6, err_msg=mode)


# ---------------------------------------------------------------------------------- fp16


def test_fp16_floor_div_floors_the_fp16_quotient():
    """In an fp16 program x / y is an fp16 value before it is floored: 3 / fp16(0.3) is 9.998 in fp32 but
    rounds to 10.0 in fp16, so the fp16 program's floor_div gives 10 where an fp32 quotient floors to 9."""
    x, y = np.array([3.0, 6.0], np.float16), np.array([0.3, 0.3], np.float16)
    got = evaluate(lambda x, y: mb.floor_div(x=x, y=y), x, y)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.array([10, 20], np.float16))
    assert np.floor(np.float32(x[0]) / np.float32(y[0])) == 9


# ---------------------------------------------------------------------------------- gather_nd, softplus_parametric


@pytest.mark.parametrize("opset", [None, ct.target.iOS17])
def test_gather_nd_refuses_negative_and_past_the_end_indices(opset):
    """gather_nd documents no negative indices (iOS17: out of bounds); torch's advanced indexing wraps them."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(evaluate(lambda x, i: mb.gather_nd(x=x, indices=i), x, i32(2, 3, 0, 1).reshape(2, 2),
                                           opset=opset), f32(11, 1))
    message = refused(lambda x, i: mb.gather_nd(x=x, indices=i), x, i32(0, 1, 1, -1).reshape(2, 2), opset=opset)
    assert "(gather_nd)" in message and "index -1 out of bounds for axis 1 of size 4" in message
    assert "index 3 out of bounds for axis 0" in refused(lambda x, i: mb.gather_nd(x=x, indices=i), x,
                                                         i32(3, 0).reshape(1, 2), opset=opset)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # coremltools' folding at x = 60
def test_softplus_parametric_is_per_channel_and_finite_for_large_inputs():
    """alpha_i * log(1 + e^(beta_i * x)) along axis 1, as coremltools folds it; e^(beta * x) overflowing fp32
    does not make it inf."""
    x = np.array([-3.0, 0.0, 2.0, 60.0], np.float32).reshape(1, 1, 4).repeat(2, axis=1)
    alpha, beta = f32(0.5, 2.0), f32(1.0, 3.0)
    build = lambda x: mb.softplus_parametric(x=x, alpha=alpha, beta=beta)  # noqa: E731
    got = evaluate(build, x)
    exact = alpha.reshape(1, 2, 1).astype(np.float64) * np.log1p(np.exp(beta.reshape(1, 2, 1) * x[:, :, :3]))
    np.testing.assert_allclose(got[:, :, :3], exact, rtol=1e-6)
    # coremltools folds in fp32 as log(1 + e^z): 1 + e^-9 loses digits there, hence the looser match
    np.testing.assert_allclose(got[:, :, :3], folded(build, x)[:, :, :3].astype(np.float32), rtol=1e-3)
    np.testing.assert_allclose(got[0, :, 3], [0.5 * 60.0, 2.0 * 180.0], rtol=1e-6)


# ---------------------------------------------------------------------------------- numerics that agree with torch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's warnings from coremltools' folding of 0^-1, (-8)^(1/3)
def test_pow_edge_cases_match_coremltools_folding():
    """0^0 = 1, a negative base to a fractional power is NaN, 0 to a negative power is inf: as NumPy and torch."""
    x, y = f32(0.0, -8.0, 0.0, -2.0, 4.0), f32(0.0, 1 / 3, -1.0, 3.0, 0.5)
    got = evaluate(lambda x, y: mb.pow(x=x, y=y), x, y)
    np.testing.assert_array_equal(got, f32(1.0, np.nan, np.inf, -8.0, 2.0))
    np.testing.assert_array_equal(got, folded(lambda x, y: mb.pow(x=x, y=y), x, y))


@pytest.mark.parametrize("build", [
    lambda x: mb.layer_norm(x=x, axes=[-1], epsilon=1.0), lambda x: mb.instance_norm(x=x, epsilon=1.0),
], ids=["layer_norm", "instance_norm"])
def test_norm_epsilon_is_added_to_the_biased_variance_under_the_root(build):
    """(x - mean) / sqrt(var + eps), var biased: a large epsilon makes any other placement visible."""
    x = np.array([0.0, 1.0, 2.0, 5.0], np.float32).reshape(1, 1, 4)
    got = evaluate(build, x)
    want = (x - x.mean()) / np.sqrt(x.var() + 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, (x - x.mean()) / (x.std() + 1.0))


def test_softmax_and_reduce_log_sum_exp_are_stable_at_large_inputs():
    x = f32(1000.0, 1001.0, -1000.0)
    soft = evaluate(lambda x: mb.softmax(x=x, axis=0), x)
    np.testing.assert_allclose(soft, folded(lambda x: mb.softmax(x=x, axis=0), x), rtol=1e-6)
    lse = evaluate(lambda x: mb.reduce_log_sum_exp(x=x, axes=[0]), x)
    np.testing.assert_allclose(lse, 1001.0 + np.log1p(np.exp(-1.0)), rtol=1e-6)
