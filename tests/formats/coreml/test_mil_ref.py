"""The MIL reference evaluator, op by op against PyTorch, and its guards against silent wrong answers.

Each supported op type is built into a one-op MIL program with coremltools' builder and evaluated
by :mod:`parity.formats.coreml.mil_ref`; the result is compared with the equivalent torch computation (or, where
torch has none, the example coremltools documents). ``test_every_kernel_has_a_test`` keeps the
table honest: a kernel nobody tests fails it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

import parity._triton_first  # noqa: F401  (before coremltools, which imports tensorflow: tensorflow-then-triton segfaults)

pytest.importorskip("coremltools")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import coremltools as ct  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from parity.formats.coreml.mil_ref import Evaluator, MilEvaluationError, UnsupportedOpError, supported_ops  # noqa: E402
from parity.formats.coreml.mil_ref import ops as kernels  # noqa: E402

_SPEC_DTYPES = {np.dtype(np.float32): types.fp32, np.dtype(np.float16): types.fp16, np.dtype(np.int32): types.int32,
                np.dtype(np.bool_): types.bool}
rng = np.random.default_rng(0)


def rand(*shape, low=-2.0, high=2.0, dtype=np.float32):
    return rng.uniform(low, high, size=shape).astype(dtype)


@dataclass
class Op:
    """One op test: inputs by name, a builder body, the torch reference."""

    id: str
    inputs: dict
    build: Callable
    reference: Callable
    opset: Optional[object] = None
    rtol: float = 1e-5
    atol: float = 1e-6
    extra: dict = field(default_factory=dict)


def program(build, inputs: dict, opset=None):
    specs = [mb.TensorSpec(shape=a.shape, dtype=_SPEC_DTYPES[a.dtype]) for a in inputs.values()]
    return mb.program(input_specs=specs, opset_version=opset)(build)


def evaluate(build, inputs: dict, opset=None) -> np.ndarray:
    outputs = Evaluator(program(build, inputs, opset)).run(inputs)
    return next(iter(outputs.values()))


T = torch.from_numpy

# ---- constants used by several ops
W = rand(6, 4, 3, 3)  # conv weight [C_out, C_in, kH, kW]
B = rand(6)
WG = rand(6, 2, 3, 3)  # groups=2
WD = rand(4, 1, 3, 3)  # depthwise
WT = rand(4, 3, 4, 4)  # conv_transpose weight [C_in, C_out, kH, kW]
WT2 = rand(4, 2, 3, 3)  # conv_transpose, groups=2 -> C_out 4
X4 = rand(2, 4, 9, 9)
MEAN, VAR, GAMMA, BETA = rand(4), rand(4, low=0.1, high=2.0), rand(4), rand(4)


def unary(name, torch_fn, low=-2.0, high=2.0, **kw):
    return Op(name, {"x": rand(2, 3, 4, low=low, high=high)}, lambda x: getattr(mb, name)(x=x, **kw),
              lambda x: torch_fn(x))


def binary(name, torch_fn, dtype=np.float32, low=-2.0, high=2.0):
    if dtype == np.bool_:
        inputs = {"x": rng.integers(0, 2, (2, 3, 4)).astype(bool), "y": rng.integers(0, 2, (3, 4)).astype(bool)}
    elif dtype == np.int32:
        inputs = {"x": rng.integers(-20, 20, (2, 3, 4)).astype(np.int32),
                  "y": rng.choice([-7, -3, 2, 5], (3, 4)).astype(np.int32)}
    else:
        inputs = {"x": rand(2, 3, 4, low=low, high=high), "y": rand(3, 4, low=low, high=high)}
    return Op(f"{name}-{np.dtype(dtype).name}", inputs, lambda x, y: getattr(mb, name)(x=x, y=y), torch_fn)


def reduce(name, torch_fn, keep_dims=False, low=-2.0):
    return Op(name, {"x": rand(2, 3, 4, 5, low=low)}, lambda x: getattr(mb, name)(x=x, axes=[1, -1], keep_dims=keep_dims),
              lambda x: torch_fn(x, (1, 3), keep_dims))


def _lut_packed(indices: np.ndarray, nbits: int) -> np.ndarray:
    from coremltools.optimize._utils import pack_elements_into_bits

    return pack_elements_into_bits(indices.astype(np.uint8).reshape(-1), nbits)


LUT_INDICES = rng.integers(0, 16, (6, 4)).astype(np.uint8)
LUT = rand(16)
LUT_BLOCKS = rand(2, 1, 16, 1)  # two tables over axis 0 (rows 0-2 and 3-5), scalar entries
Q = rng.integers(-128, 127, (6, 4)).astype(np.int8)
QZP = rng.integers(-5, 5, (6,)).astype(np.int8)
QSCALE = rand(6, low=0.01, high=0.1)
BS_DATA = rng.integers(-8, 8, (4, 6)).astype(np.int8)
BS_SCALE = rand(4, 2, low=0.01, high=0.2)
BS_OFFSET = rng.integers(-2, 2, (4, 2)).astype(np.int8)


def _torch_dequant(q, scale, zp, axis=0):
    """scale * (q - zero_point), per channel along `axis` (torch's per-channel affine dequantization)."""
    shape = [1] * q.ndim
    shape[axis] = -1
    return (T(q).float() - T(zp).float().reshape(shape)) * T(scale).reshape(shape)


OPS: list[Op] = [
    # ---- constants and decompression
    Op("const", {"x": rand(2, 3)}, lambda x: mb.add(x=x, y=np.arange(3, dtype=np.float32)),
       lambda x: x + torch.arange(3, dtype=torch.float32)),
    Op("identity", {"x": rand(2, 3)}, lambda x: mb.identity(x=x), lambda x: x),
    Op("constexpr_affine_dequantize", {"x": rand(6, 4)},
       lambda x: mb.add(x=x, y=mb.constexpr_affine_dequantize(quantized_data=Q, zero_point=QZP, scale=QSCALE, axis=0)),
       lambda x: x + _torch_dequant(Q, QSCALE, QZP), opset=ct.target.iOS16),
    Op("constexpr_blockwise_shift_scale", {"x": rand(4, 6)},
       lambda x: mb.add(x=x, y=mb.constexpr_blockwise_shift_scale(data=BS_DATA, scale=BS_SCALE, offset=BS_OFFSET)),
       lambda x: x + (T(BS_DATA).float() - T(BS_OFFSET).float().repeat_interleave(3, 1))
       * T(BS_SCALE).repeat_interleave(3, 1), opset=ct.target.iOS18),
    Op("constexpr_lut_to_dense-iOS16", {"x": rand(6, 4)},
       lambda x: mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=_lut_packed(LUT_INDICES, 4), lut=LUT,
                                                         shape=np.array([6, 4], np.uint32))),
       lambda x: x + T(LUT)[T(LUT_INDICES.astype(np.int64))], opset=ct.target.iOS16),
    Op("constexpr_lut_to_dense-iOS18", {"x": rand(6, 4)},
       lambda x: mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=LUT_INDICES.astype(types.np_uint4_dtype),
                                                         lut=LUT_BLOCKS)),
       lambda x: x + torch.cat([T(LUT_BLOCKS[0, 0, :, 0])[T(LUT_INDICES[:3].astype(np.int64))],
                                T(LUT_BLOCKS[1, 0, :, 0])[T(LUT_INDICES[3:].astype(np.int64))]]),
       opset=ct.target.iOS18),
    Op("constexpr_cast", {"x": rand(2, 3)},
       lambda x: mb.add(x=x, y=mb.constexpr_cast(source_val=np.array([[0.1, 0.2, 0.3]], np.float16),
                                                 output_dtype="fp32")),
       lambda x: x + torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float16).float(), opset=ct.target.iOS16),
    Op("dequantize", {"x": rand(6, 4)},
       lambda x: mb.add(x=x, y=mb.dequantize(input=Q, zero_point=QZP, scale=QSCALE, axis=0)),
       lambda x: x + _torch_dequant(Q, QSCALE, QZP), opset=ct.target.iOS17),
    # ---- elementwise binary, with broadcasting
    binary("add", torch.add), binary("sub", torch.sub), binary("mul", torch.mul),
    binary("real_div", torch.true_divide, low=0.5), binary("maximum", torch.maximum),
    binary("minimum", torch.minimum), binary("pow", torch.pow, low=0.5),
    binary("floor_div", lambda x, y: torch.div(x, y, rounding_mode="floor"), low=0.5),
    binary("floor_div", lambda x, y: torch.div(x, y, rounding_mode="floor"), dtype=np.int32),
    binary("mod", torch.remainder, dtype=np.int32), binary("mod", torch.remainder, low=0.5),
    binary("add", torch.add, dtype=np.int32),
    binary("equal", torch.eq, dtype=np.int32), binary("not_equal", torch.ne, dtype=np.int32),
    binary("less", torch.lt), binary("less_equal", torch.le, dtype=np.int32), binary("greater", torch.gt),
    binary("greater_equal", torch.ge, dtype=np.int32),
    binary("logical_and", torch.logical_and, dtype=np.bool_), binary("logical_or", torch.logical_or, dtype=np.bool_),
    binary("logical_xor", torch.logical_xor, dtype=np.bool_),
    # ---- elementwise unary
    unary("abs", torch.abs), unary("acos", torch.acos, -0.9, 0.9), unary("asin", torch.asin, -0.9, 0.9),
    unary("atan", torch.atan), unary("atanh", torch.atanh, -0.9, 0.9), unary("ceil", torch.ceil),
    unary("cos", torch.cos), unary("cosh", torch.cosh), unary("erf", torch.erf), unary("exp", torch.exp),
    unary("exp2", torch.exp2), unary("floor", torch.floor), unary("sign", torch.sign), unary("sin", torch.sin),
    unary("sinh", torch.sinh), unary("sqrt", torch.sqrt, 0.1), unary("square", torch.square),
    unary("tan", torch.tan, -1.0, 1.0), unary("tanh", torch.tanh), unary("relu", torch.relu),
    unary("relu6", F.relu6, -3.0, 9.0), unary("sigmoid", torch.sigmoid), unary("softplus", F.softplus),
    unary("softsign", F.softsign), unary("silu", F.silu),
    Op("round", {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.4, 2.6], np.float32)}, lambda x: mb.round(x=x),
       lambda x: torch.tensor([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 3.0])),  # half to even, as MIL documents
    Op("logical_not", {"x": rng.integers(0, 2, (3, 4)).astype(bool)}, lambda x: mb.logical_not(x=x),
       torch.logical_not),
    unary("inverse", lambda x: 1 / (x + 1e-4), 0.1, epsilon=1e-4),
    unary("log", lambda x: torch.log(x + 1e-3), 0.1, epsilon=1e-3),
    unary("rsqrt", lambda x: torch.rsqrt(x + 1e-2), 0.1, epsilon=1e-2),
    unary("threshold", lambda x: torch.clamp(x, min=0.3), alpha=0.3),
    unary("clip", lambda x: torch.clamp(x, -0.5, 1.0), alpha=-0.5, beta=1.0),
    Op("cast-fp32-int32", {"x": rand(3, 4, low=-5, high=5)}, lambda x: mb.cast(x=x, dtype="int32"),
       lambda x: x.to(torch.int32)),
    Op("cast-fp32-fp16", {"x": rand(3, 4)}, lambda x: mb.cast(x=x, dtype="fp16"), lambda x: x.half()),
    Op("cast-int32-bool", {"x": rng.integers(-2, 2, (3, 4)).astype(np.int32)}, lambda x: mb.cast(x=x, dtype="bool"),
       lambda x: x.bool()),
    # ---- activations
    unary("leaky_relu", lambda x: F.leaky_relu(x, 0.1), alpha=0.1),
    unary("elu", lambda x: F.elu(x, 0.7), alpha=0.7),
    Op("gelu-EXACT", {"x": rand(3, 4)}, lambda x: mb.gelu(x=x), F.gelu),
    Op("gelu-TANH", {"x": rand(3, 4)}, lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
       lambda x: F.gelu(x, approximate="tanh")),
    Op("gelu-SIGMOID", {"x": rand(3, 4)}, lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
       lambda x: x * torch.sigmoid(1.702 * x)),
    unary("sigmoid_hard", lambda x: F.hardsigmoid(x), -4.0, 4.0, alpha=1 / 6, beta=0.5),
    unary("clamped_relu", lambda x: torch.clamp(torch.where(x >= 0, x, 0.2 * x), max=1.5), -3.0, 3.0,
          alpha=0.2, beta=1.5),
    unary("scaled_tanh", lambda x: 1.5 * torch.tanh(0.5 * x), alpha=1.5, beta=0.5),
    unary("linear_activation", lambda x: 2.0 * x - 0.5, alpha=2.0, beta=-0.5),
    unary("thresholded_relu", lambda x: torch.where(x >= 0.4, x, torch.zeros_like(x)), alpha=0.4),
    Op("prelu", {"x": X4}, lambda x: mb.prelu(x=x, alpha=GAMMA), lambda x: F.prelu(x, T(GAMMA))),
    Op("softmax", {"x": rand(2, 3, 4)}, lambda x: mb.softmax(x=x, axis=1), lambda x: torch.softmax(x, 1)),
    Op("select", {"c": rng.integers(0, 2, (3, 4)).astype(bool), "a": rand(3, 4), "b": rand(3, 4)},
       lambda c, a, b: mb.select(cond=c, a=a, b=b), lambda c, a, b: torch.where(c, a, b)),
    # ---- linear algebra
    Op("linear", {"x": rand(2, 5, 4)}, lambda x: mb.linear(x=x, weight=W[:, :, 0, 0], bias=B),
       lambda x: F.linear(x, T(W[:, :, 0, 0]), T(B))),
    Op("matmul", {"x": rand(2, 3, 4), "y": rand(5, 4)}, lambda x, y: mb.matmul(x=x, y=y, transpose_y=True),
       lambda x, y: x @ y.T),
    Op("matmul-transpose_x", {"x": rand(2, 4, 3), "y": rand(2, 4, 5)},
       lambda x, y: mb.matmul(x=x, y=y, transpose_x=True), lambda x, y: x.transpose(1, 2) @ y),
    # ---- convolution
    Op("conv-custom", {"x": X4}, lambda x: mb.conv(x=x, weight=W, bias=B, pad_type="custom", pad=[1, 1, 1, 1]),
       lambda x: F.conv2d(x, T(W), T(B), padding=1)),
    Op("conv-asymmetric", {"x": X4}, lambda x: mb.conv(x=x, weight=W, pad_type="custom", pad=[0, 2, 1, 0]),
       lambda x: F.conv2d(F.pad(x, (1, 0, 0, 2)), T(W))),
    Op("conv-valid-stride2", {"x": X4}, lambda x: mb.conv(x=x, weight=W, strides=[2, 2], pad_type="valid"),
       lambda x: F.conv2d(x, T(W), stride=2)),
    Op("conv-same-stride2", {"x": X4}, lambda x: mb.conv(x=x, weight=W, strides=[2, 2], pad_type="same"),
       lambda x: F.conv2d(F.pad(x, (1, 1, 1, 1)), T(W), stride=2)),
    Op("conv-same-even-kernel", {"x": X4}, lambda x: mb.conv(x=x, weight=WT.transpose(1, 0, 2, 3)[:, :4],
                                                            pad_type="same"),
       lambda x: F.conv2d(F.pad(x, (1, 2, 1, 2)), T(WT.transpose(1, 0, 2, 3)[:, :4].copy()))),
    Op("conv-same_lower-even-kernel", {"x": X4},
       lambda x: mb.conv(x=x, weight=WT.transpose(1, 0, 2, 3)[:, :4], pad_type="same_lower"),
       lambda x: F.conv2d(F.pad(x, (2, 1, 2, 1)), T(WT.transpose(1, 0, 2, 3)[:, :4].copy())),
       opset=ct.target.iOS16),
    Op("conv-dilated", {"x": X4}, lambda x: mb.conv(x=x, weight=W, dilations=[2, 2], pad_type="custom",
                                                    pad=[2, 2, 2, 2]),
       lambda x: F.conv2d(x, T(W), padding=2, dilation=2)),
    Op("conv-grouped", {"x": X4}, lambda x: mb.conv(x=x, weight=WG, groups=2, pad_type="valid"),
       lambda x: F.conv2d(x, T(WG), groups=2)),
    Op("conv-depthwise", {"x": X4}, lambda x: mb.conv(x=x, weight=WD, groups=4, pad_type="custom", pad=[1] * 4),
       lambda x: F.conv2d(x, T(WD), groups=4, padding=1)),
    Op("conv-1d", {"x": rand(2, 4, 11)}, lambda x: mb.conv(x=x, weight=W[:, :, :, 0], pad_type="valid"),
       lambda x: F.conv1d(x, T(W[:, :, :, 0].copy()))),
    Op("conv-3d", {"x": rand(1, 4, 5, 6, 7)}, lambda x: mb.conv(x=x, weight=rand(3, 4, 2, 2, 2), pad_type="valid"),
       None),  # reference filled in below (needs the same weight)
    Op("conv-dynamic-weight", {"x": X4, "w": W}, lambda x, w: mb.conv(x=x, weight=w, pad_type="valid"),
       lambda x, w: F.conv2d(x, w)),
    Op("conv_transpose-k4s2p1", {"x": X4}, lambda x: mb.conv_transpose(x=x, weight=WT, bias=B[:3], strides=[2, 2],
                                                                     pad_type="custom", pad=[1, 1, 1, 1]),
       lambda x: F.conv_transpose2d(x, T(WT), T(B[:3]), stride=2, padding=1)),
    Op("conv_transpose-valid", {"x": X4}, lambda x: mb.conv_transpose(x=x, weight=WT, pad_type="valid"),
       lambda x: F.conv_transpose2d(x, T(WT))),
    Op("conv_transpose-asymmetric", {"x": X4},
       lambda x: mb.conv_transpose(x=x, weight=WT, strides=[2, 2], pad_type="custom", pad=[0, 1, 2, 1]),
       lambda x: F.conv_transpose2d(x, T(WT), stride=2)[:, :, 0:-1, 2:-1]),
    Op("conv_transpose-output_shape", {"x": X4},
       lambda x: mb.conv_transpose(x=x, weight=WT, bias=B[:3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                   output_shape=[2, 3, 19, 19]),
       lambda x: F.conv_transpose2d(x, T(WT), T(B[:3]), stride=2, padding=1, output_padding=1)),
    Op("conv_transpose-grouped-dilated", {"x": X4},
       lambda x: mb.conv_transpose(x=x, weight=WT2, groups=2, dilations=[2, 2], pad_type="valid"),
       lambda x: F.conv_transpose2d(x, T(WT2), groups=2, dilation=2)),
    # ---- pooling
    Op("max_pool", {"x": X4}, lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
       lambda x: F.max_pool2d(x, 2)),
    Op("max_pool-pad-ceil", {"x": X4}, lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2],
                                                             pad_type="custom", pad=[1, 1, 1, 1], ceil_mode=True),
       lambda x: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)),
    Op("max_pool-same", {"x": X4}, lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="same"),
       lambda x: F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-np.inf), 2)),
    Op("avg_pool-include-pad", {"x": X4}, lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2],
                                                                pad_type="custom", pad=[1, 1, 1, 1]),
       lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=True)),
    Op("avg_pool-exclude-pad", {"x": X4}, lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2],
                                                                pad_type="custom", pad=[1, 1, 1, 1],
                                                                exclude_padding_from_average=True),
       lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)),
    Op("avg_pool-ceil", {"x": X4}, lambda x: mb.avg_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid",
                                                         ceil_mode=True),
       lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True)),
    Op("l2_pool", {"x": X4}, lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
       lambda x: F.lp_pool2d(x, 2, 2, 2)),
    # ---- normalization
    Op("batch_norm", {"x": X4}, lambda x: mb.batch_norm(x=x, mean=MEAN, variance=VAR, gamma=GAMMA, beta=BETA,
                                                        epsilon=1e-3),
       lambda x: F.batch_norm(x, T(MEAN), T(VAR), T(GAMMA), T(BETA), False, 0.0, 1e-3)),
    Op("instance_norm", {"x": X4}, lambda x: mb.instance_norm(x=x, gamma=GAMMA, beta=BETA, epsilon=1e-5),
       lambda x: F.instance_norm(x, weight=T(GAMMA), bias=T(BETA), eps=1e-5)),
    Op("layer_norm", {"x": rand(2, 5, 4)}, lambda x: mb.layer_norm(x=x, axes=[-1], gamma=GAMMA, beta=BETA,
                                                                   epsilon=1e-5),
       lambda x: F.layer_norm(x, (4,), T(GAMMA), T(BETA), 1e-5)),
    Op("l2_norm", {"x": X4}, lambda x: mb.l2_norm(x=x, epsilon=1e-6),
       lambda x: x / torch.sqrt((x * x).sum((1, 2, 3), keepdim=True) + 1e-6)),
    # ---- reductions
    reduce("reduce_mean", lambda x, d, k: x.mean(d, keepdim=k)),
    reduce("reduce_sum", lambda x, d, k: x.sum(d, keepdim=k), keep_dims=True),
    reduce("reduce_max", lambda x, d, k: x.amax(d, keepdim=k)),
    reduce("reduce_min", lambda x, d, k: x.amin(d, keepdim=k)),
    reduce("reduce_prod", lambda x, d, k: x.prod(3, keepdim=k).prod(1, keepdim=k)),
    reduce("reduce_sum_square", lambda x, d, k: (x * x).sum(d, keepdim=k)),
    reduce("reduce_l1_norm", lambda x, d, k: x.abs().sum(d, keepdim=k)),
    reduce("reduce_l2_norm", lambda x, d, k: torch.linalg.vector_norm(x, 2, d, keepdim=k)),
    reduce("reduce_log_sum", lambda x, d, k: torch.log(x.sum(d, keepdim=k)), low=0.1),
    reduce("reduce_log_sum_exp", lambda x, d, k: torch.logsumexp(x, d, keepdim=k)),
    Op("reduce_mean-all", {"x": rand(2, 3)}, lambda x: mb.reduce_mean(x=x), lambda x: x.mean()),
    # an int32 sum stays int32 in Core ML (torch promotes it to int64): a padding mask's length
    Op("reduce_sum-int32", {"x": rng.integers(0, 2, (3, 7)).astype(np.int32)},
       lambda x: mb.reduce_sum(x=x, axes=[1], keep_dims=True), lambda x: x.sum(1, keepdim=True, dtype=torch.int32)),
    Op("reduce_argmax", {"x": rand(2, 3, 5)}, lambda x: mb.reduce_argmax(x=x, axis=-1),
       lambda x: x.argmax(-1).int()),
    Op("reduce_argmin", {"x": rand(2, 3, 5)}, lambda x: mb.reduce_argmin(x=x, axis=1, keep_dims=True),
       lambda x: x.argmin(1, keepdim=True).int()),
    # ---- resizing (torch's align_corners=False is half-pixel centres, MIL's UNALIGN_CORNERS)
    Op("upsample_bilinear-half_pixel", {"x": X4},
       lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=3.0, align_corners=False),
       lambda x: F.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=False)),
    Op("upsample_bilinear-align_corners", {"x": X4},
       lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0, align_corners=True),
       lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
    Op("resize_bilinear-UNALIGN", {"x": X4},
       lambda x: mb.resize_bilinear(x=x, target_size_height=13, target_size_width=5, sampling_mode="UNALIGN_CORNERS"),
       lambda x: F.interpolate(x, size=(13, 5), mode="bilinear", align_corners=False)),
    Op("resize_bilinear-STRICT_ALIGN", {"x": X4},
       lambda x: mb.resize_bilinear(x=x, target_size_height=13, target_size_width=5,
                                    sampling_mode="STRICT_ALIGN_CORNERS"),
       lambda x: F.interpolate(x, size=(13, 5), mode="bilinear", align_corners=True)),
    Op("upsample_nearest_neighbor", {"x": X4},
       lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
       lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest")),
    Op("resize_nearest_neighbor", {"x": X4},
       lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=18, target_size_width=27),
       lambda x: F.interpolate(x, size=(18, 27), mode="nearest")),
    # ---- tensor transformations
    Op("reshape", {"x": rand(2, 3, 4)}, lambda x: mb.reshape(x=x, shape=[-1, 4]), lambda x: x.reshape(-1, 4)),
    Op("reshape-0-iOS15", {"x": rand(2, 3, 4)}, lambda x: mb.reshape(x=x, shape=[0, -1, 2]),
       lambda x: x.reshape(2, -1, 2)),
    Op("reshape-0-iOS17", {"x": rand(2, 3, 4)}, lambda x: mb.reshape(x=x, shape=[1, 0, -1, 0]),
       lambda x: x.reshape(1, 2, 3, 4), opset=ct.target.iOS17),
    Op("transpose", {"x": rand(2, 3, 4)}, lambda x: mb.transpose(x=x, perm=[2, 0, 1]), lambda x: x.permute(2, 0, 1)),
    Op("squeeze", {"x": rand(2, 1, 4, 1)}, lambda x: mb.squeeze(x=x, axes=[-1]), lambda x: x.squeeze(-1)),
    Op("squeeze-all", {"x": rand(2, 1, 4, 1)}, lambda x: mb.squeeze(x=x), lambda x: x.squeeze()),
    Op("expand_dims", {"x": rand(2, 3)}, lambda x: mb.expand_dims(x=x, axes=[0, -1]),
       lambda x: x.unsqueeze(0).unsqueeze(-1)),
    Op("flatten2d", {"x": rand(2, 3, 4, 5)}, lambda x: mb.flatten2d(x=x, axis=2), lambda x: x.reshape(6, 20)),
    Op("slice_by_index", {"x": rand(4, 6, 5)},
       lambda x: mb.slice_by_index(x=x, begin=[1, 0, 4], end=[3, 5, 0], stride=[1, 2, -2],
                                   begin_mask=[False, True, False], end_mask=[False, False, True],
                                   squeeze_mask=[False, False, False]),
       lambda x: T(x.numpy()[1:3, :5:2, 4::-2].copy())),
    Op("slice_by_index-squeeze", {"x": rand(4, 6, 5)},
       lambda x: mb.slice_by_index(x=x, begin=[-1, 1, 0], end=[0, -1, 5], squeeze_mask=[True, False, False]),
       lambda x: x[-1, 1:-1, 0:5]),
    Op("slice_by_size", {"x": rand(4, 6, 5)}, lambda x: mb.slice_by_size(x=x, begin=[1, 2, 0], size=[2, -1, 3]),
       lambda x: x[1:3, 2:, 0:3]),
    Op("concat", {"x": rand(2, 3), "y": rand(2, 5)}, lambda x, y: mb.concat(values=[x, y], axis=-1),
       lambda x, y: torch.cat([x, y], -1)),
    Op("concat-interleave", {"x": rand(3, 2), "y": rand(3, 2)},
       lambda x, y: mb.concat(values=[x, y], axis=0, interleave=True),
       lambda x, y: torch.stack([x, y], 1).reshape(6, 2)),
    Op("stack", {"x": rand(2, 3), "y": rand(2, 3)}, lambda x, y: mb.stack(values=[x, y], axis=1),
       lambda x, y: torch.stack([x, y], 1)),
    Op("split-num_splits", {"x": rand(2, 6)}, lambda x: mb.split(x=x, num_splits=3, axis=1)[1],
       lambda x: x[:, 2:4]),
    Op("split-split_sizes", {"x": rand(2, 6)}, lambda x: mb.split(x=x, split_sizes=[1, 5], axis=1)[1],
       lambda x: x[:, 1:]),
    Op("tile", {"x": rand(2, 3)}, lambda x: mb.tile(x=x, reps=[2, 3]), lambda x: x.repeat(2, 3)),
    Op("pad-constant", {"x": X4}, lambda x: mb.pad(x=x, pad=[1, 2, 0, 3], constant_val=0.5),
       lambda x: F.pad(x, (0, 3, 1, 2), value=0.5)),
    Op("pad-reflect", {"x": X4}, lambda x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="reflect"),
       lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect")),
    Op("pad-replicate", {"x": X4}, lambda x: mb.pad(x=x, pad=[0, 0, 1, 2, 2, 1], mode="replicate"),
       lambda x: F.pad(x, (2, 1, 1, 2), mode="replicate")),
    Op("shape", {"x": rand(2, 3, 4)}, lambda x: mb.shape(x=x), lambda x: torch.tensor([2, 3, 4], dtype=torch.int32)),
    Op("fill", {"x": rand(2, 3)}, lambda x: mb.add(x=x, y=mb.fill(shape=mb.shape(x=x), value=1.5)),
       lambda x: x + 1.5),
    Op("range_1d", {"x": rand(5)}, lambda x: mb.add(x=x, y=mb.range_1d(start=1.0, end=3.5, step=0.5)),
       lambda x: x + torch.arange(1.0, 3.5, 0.5)),
    Op("gather", {"x": rand(4, 5), "i": np.array([[3, -1], [0, 2]], np.int32)},
       lambda x, i: mb.gather(x=x, indices=i, axis=1), lambda x, i: x[:, torch.remainder(i.long(), 5)]),
    Op("gather_along_axis", {"x": rand(4, 5), "i": np.array([[3, -1, 0, 2, 1]] * 2, np.int32)},
       lambda x, i: mb.gather_along_axis(x=x, indices=i, axis=0),
       lambda x, i: torch.gather(x, 0, torch.remainder(i.long(), 4))),
    Op("pixel_shuffle", {"x": rand(2, 8, 3, 3)}, lambda x: mb.pixel_shuffle(x=x, upscale_factor=2),
       lambda x: F.pixel_shuffle(x, 2)),
    Op("pixel_unshuffle", {"x": rand(2, 2, 4, 6)}, lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
       lambda x: F.pixel_unshuffle(x, 2), opset=ct.target.iOS16),
    Op("gather_nd", {"x": rand(4, 5, 3), "i": np.array([[[3, 1], [0, 4]], [[2, 2], [1, 0]]], np.int32)},
       lambda x, i: mb.gather_nd(x=x, indices=i), lambda x, i: x[i[..., 0].long(), i[..., 1].long()]),
    Op("softplus_parametric", {"x": X4}, lambda x: mb.softplus_parametric(x=x, alpha=GAMMA, beta=BETA),
       lambda x: T(GAMMA).reshape(1, -1, 1, 1) * torch.log1p(torch.exp(T(BETA).reshape(1, -1, 1, 1) * x))),
]

def _ifoz(w):
    """torch's LSTM gate order (input, forget, cell, output) to MIL's (input, forget, output, cell)."""
    i, f, g, o = np.split(w, 4)
    return np.concatenate([i, f, o, g])


_LSTM = torch.nn.LSTM(3, 4, batch_first=False, bidirectional=True)
_LW = {k: v.detach().numpy() for k, v in _LSTM.state_dict().items()}


def _mil_lstm(direction: str, output_sequence: bool = True):
    suffixes = ["", "_reverse"] if direction == "bidirectional" else ["_reverse" if direction == "reverse" else ""]

    def build(x):
        w = [(_ifoz(_LW[f"weight_ih_l0{s}"]), _ifoz(_LW[f"weight_hh_l0{s}"]),
              _ifoz(_LW[f"bias_ih_l0{s}"] + _LW[f"bias_hh_l0{s}"])) for s in suffixes]
        zeros = np.zeros((2, 4 * len(suffixes)), np.float32)
        back = dict(weight_ih_back=w[1][0], weight_hh_back=w[1][1], bias_back=w[1][2]) if len(w) > 1 else {}
        return mb.lstm(x=x, initial_h=zeros, initial_c=zeros, weight_ih=w[0][0], weight_hh=w[0][1], bias=w[0][2],
                       direction=direction, output_sequence=output_sequence, **back)[0]
    return build


def _torch_lstm(direction: str, output_sequence: bool = True):
    def reference(x):
        if direction == "bidirectional":
            out, _ = _LSTM(x)
            return out.detach()
        one = torch.nn.LSTM(3, 4)
        s = "_reverse" if direction == "reverse" else ""
        one.load_state_dict({k: T(_LW[k + s]) for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")})
        out, (h, _) = one(x.flip(0) if s else x)
        out = out.flip(0) if s else out
        return (out if output_sequence else h).detach()
    return reference


RECURRENT = [
    Op("lstm-forward", {"x": rand(5, 2, 3)}, _mil_lstm("forward"), _torch_lstm("forward")),
    Op("lstm-reverse", {"x": rand(5, 2, 3)}, _mil_lstm("reverse"), _torch_lstm("reverse")),
    Op("lstm-bidirectional", {"x": rand(5, 2, 3)}, _mil_lstm("bidirectional"), _torch_lstm("bidirectional")),
    Op("lstm-last-step", {"x": rand(5, 2, 3)}, _mil_lstm("forward", False), _torch_lstm("forward", False)),
    Op("gather-scalar-index", {"x": rand(4, 5)}, lambda x: mb.gather(x=x, indices=np.int32(2), axis=0),
       lambda x: x[2]),
    Op("gather-scalar-of-vector", {"x": rand(5)}, lambda x: mb.add(x=mb.gather(x=x, indices=np.int32(-1), axis=0),
                                                                  y=np.float32(0.0)), lambda x: x[-1]),
    Op("real_div-exact-integers", {"x": np.array([48, 12], np.int32), "y": np.array([3, 4], np.int32)},
       lambda x, y: mb.real_div(x=x, y=y), lambda x, y: torch.div(x, y, rounding_mode="trunc")),
    Op("concat-scalars", {"x": rand(4, 5)},
       lambda x: mb.reshape(x=x, shape=mb.concat(values=[mb.gather(x=mb.shape(x=x), indices=np.int32(1), axis=0),
                                                         np.int32(-1)], axis=0)),
       lambda x: x.reshape(5, -1)),
]
OPS += RECURRENT
_W3 = rand(3, 4, 2, 2, 2)
OPS = [op if op.id != "conv-3d" else Op("conv-3d", op.inputs, lambda x: mb.conv(x=x, weight=_W3, pad_type="valid"),
                                         lambda x: F.conv3d(x, T(_W3))) for op in OPS]


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_op_matches_torch(op: Op):
    got = evaluate(op.build, op.inputs, op.opset)
    want = op.reference(*[T(a) for a in op.inputs.values()])
    want = want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype or (got.dtype.kind == want.dtype.kind == "f"), (got.dtype, want.dtype)
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want.astype(got.dtype), rtol=op.rtol, atol=op.atol)


def test_every_kernel_has_a_test():
    tested = set()
    for op in OPS:
        prog = program(op.build, op.inputs, op.opset)
        tested |= {o.op_type for o in prog.functions["main"].operations}
    assert set(supported_ops()) - tested == set()


H = np.float16
WL = rand(5, 324)
FP16_OPS = {
    "conv": (lambda x: mb.conv(x=x, weight=W.astype(H), bias=B.astype(H), pad_type="custom", pad=[1, 1, 1, 1]),
             lambda x: F.conv2d(x, T(W), T(B), padding=1)),
    "conv_transpose": (lambda x: mb.conv_transpose(x=x, weight=WT.astype(H), strides=[2, 2], pad_type="custom",
                                                   pad=[1, 1, 1, 1]),
                       lambda x: F.conv_transpose2d(x, T(WT), stride=2, padding=1)),
    "upsample_bilinear": (lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                                         align_corners=False),
                          lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    "avg_pool": (lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1] * 4),
                 lambda x: F.avg_pool2d(x, 3, 2, padding=1)),
    "batch_norm": (lambda x: mb.batch_norm(x=x, mean=MEAN.astype(H), variance=VAR.astype(H), gamma=GAMMA.astype(H),
                                           beta=BETA.astype(H), epsilon=H(1e-3)),
                   lambda x: F.batch_norm(x, T(MEAN), T(VAR), T(GAMMA), T(BETA), False, 0.0, 1e-3)),
    "reduce_mean": (lambda x: mb.reduce_mean(x=x, axes=[-2, -1], keep_dims=True), lambda x: x.mean((2, 3), True)),
    "linear": (lambda x: mb.linear(x=mb.reshape(x=x, shape=[2, -1]), weight=WL.astype(H)),
               lambda x: F.linear(x.reshape(2, -1), T(WL.astype(H)).float())),
}


@pytest.mark.parametrize("name", sorted(FP16_OPS))
def test_fp16_ops_compute_in_fp16(name):
    """fp16 programs: results are fp16 and within fp16 rounding of the fp32 torch result."""
    build, reference = FP16_OPS[name]
    x = X4.astype(np.float16)
    got = evaluate(build, {"x": x})
    assert got.dtype == np.float16
    want = reference(T(x).float()).numpy()
    assert np.abs(got.astype(np.float32) - want).max() <= 4e-3 * np.abs(want).max()
    assert not np.array_equal(got.astype(np.float32), want)  # it really is rounded


def test_fp16_program_stores_intermediates_in_fp16():
    """1 + 1e-4 is 1 in fp16, so (x + 1e-4 - x) * 1e4 is 0 in an fp16 program and about 1 in fp32."""

    def build(x):
        h = mb.cast(x=x, dtype="fp16")
        bumped = mb.sub(x=mb.add(x=h, y=np.float16(1e-4)), y=h)
        return mb.cast(x=mb.mul(x=bumped, y=np.float16(1e4)), dtype="fp32")

    x = np.ones((2,), np.float32)
    assert np.all(evaluate(build, {"x": x}) == 0.0)
    fp32 = evaluate(lambda x: mb.mul(x=mb.sub(x=mb.add(x=x, y=np.float32(1e-4)), y=x), y=np.float32(1e4)), {"x": x})
    assert np.allclose(fp32, 1.0, atol=1e-2)


def test_unknown_op_fails_naming_it():
    inputs = {"x": rand(2, 5)}
    prog = program(lambda x: mb.relu(x=mb.cumsum(x=x, axis=1)), inputs)
    with pytest.raises(UnsupportedOpError) as info:
        Evaluator(prog)
    assert "cumsum" in str(info.value) and "no kernel" in str(info.value)


def test_unsupported_variant_is_refused_not_guessed():
    prog = program(lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=1.5, scale_factor_width=2.0),
                   {"x": X4})
    with pytest.raises(UnsupportedOpError, match="upsample_nearest_neighbor.*non-integer"):
        Evaluator(prog).run({"x": X4})


def test_result_of_wrong_shape_is_caught_naming_the_op(monkeypatch):
    monkeypatch.setitem(kernels.KERNELS, "relu", lambda a: a.tensor("x")[..., :-1])
    prog = program(lambda x: mb.relu(x=x, name="the_relu"), {"x": rand(2, 3)})
    with pytest.raises(MilEvaluationError, match="'the_relu' \\(relu\\).*shape \\(2, 2\\).*declares \\(2, 3\\)"):
        Evaluator(prog).run({"x": rand(2, 3)})


def test_result_of_wrong_dtype_is_caught(monkeypatch):
    monkeypatch.setitem(kernels.KERNELS, "shape", lambda a: torch.tensor(list(a.tensor("x").shape), dtype=torch.float32))
    prog = program(lambda x: mb.shape(x=x), {"x": rand(2, 3)})
    with pytest.raises(MilEvaluationError, match="declares int32"):
        Evaluator(prog).run({"x": rand(2, 3)})


def test_symbolic_batch_binds_consistently():
    from coremltools.converters.mil.mil import get_new_symbol

    batch = get_new_symbol()
    prog = mb.program(input_specs=[mb.TensorSpec(shape=(batch, 3)), mb.TensorSpec(shape=(batch, 3))])(
        lambda x, y: mb.add(x=x, y=y))
    out = Evaluator(prog).run({"x": rand(4, 3), "y": rand(4, 3)})
    assert next(iter(out.values())).shape == (4, 3)
    with pytest.raises(MilEvaluationError, match="shape"):
        Evaluator(prog).run({"x": rand(4, 3), "y": rand(5, 3)})


def test_inexact_integer_division_is_refused_not_guessed():
    x, y = np.array([7, 8], np.int32), np.array([2, 4], np.int32)
    prog = program(lambda x, y: mb.real_div(x=x, y=y), {"x": x, "y": y})
    with pytest.raises(UnsupportedOpError, match="real_div of integer tensors with a remainder"):
        Evaluator(prog).run({"x": x, "y": y})
