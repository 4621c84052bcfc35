"""Kernels of the MIL reference evaluator: one function per MIL op type, on torch CPU tensors.

Each kernel takes the op's inputs (an ``_Args``) and returns its result(s). The evaluator rounds a
floating-point result to the dtype the program declares for it (fp16 in an fp16 program), so every
intermediate tensor is stored in the program's precision; inside one op, sums accumulate in fp32.
Semantics follow coremltools' op documentation (``coremltools.converters.mil.mil.ops.defs``), not
torch's where the two differ (docs/formats.md lists each difference); where the documentation is
silent, coremltools' constant folding (``value_inference``) decides. Where it leaves a variant's
semantics open (fractional nearest-neighbour scales, ``same`` padding of a transposed convolution,
vector palettization...) or an input's result undefined (int32 overflow, an out-of-bounds index, an
argmax tie...) the kernel raises :class:`UnsupportedOpError` rather than guess.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

KERNELS: dict[str, Callable] = {}

_DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64, "int8": torch.int8,
           "uint8": torch.uint8, "int16": torch.int16, "uint16": torch.uint16, "int32": torch.int32,
           "int64": torch.int64, "bool": torch.bool}


class UnsupportedOpError(NotImplementedError):
    """The evaluator has no kernel for an op, or refuses a variant whose semantics it cannot reproduce."""


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a MIL dtype name (fp16, fp32, int32, bool, ...)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise UnsupportedOpError(f"MIL dtype {name!r} has no torch equivalent here") from None


def kernel(*names: str):
    """Register the decorated function as the kernel of each MIL op type in `names`."""

    def register(fn):
        for name in names:
            KERNELS[name] = fn
        return fn

    return register


def _f(x: torch.Tensor) -> torch.Tensor:
    """Float tensors in fp32 for computing (results are rounded back to the program's dtype)."""
    return x.float() if x.is_floating_point() and x.dtype != torch.float64 else x


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------------------- const-like


@kernel("const")
def _const(a):  # the evaluator reads const values itself; listed so that "const" counts as supported
    raise AssertionError("const ops are not evaluated by a kernel")


@kernel("identity")
def _identity(a):
    return a.tensor("x").clone()


@kernel("constexpr_affine_dequantize")
def _affine_dequantize(a):
    q = a.tensor("quantized_data")
    scale, zero_point, axis = a.tensor("scale"), a.tensor("zero_point"), a.int("axis")
    shape = [1] * q.dim()
    if scale.dim() == 1 and scale.numel() > 1:
        shape[_axis(axis, q.dim())] = -1
    zp = zero_point.to(torch.float32).reshape(shape if zero_point.numel() > 1 else [1] * q.dim())
    out = (q.to(torch.float32) - zp) * scale.to(torch.float32).reshape(shape if scale.numel() > 1 else [1] * q.dim())
    return out.to(scale.dtype)


def _repeat_blocks(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Repeat each element of `t` over its block so that it has `shape` (block = shape // t.shape)."""
    for axis, (full, part) in enumerate(zip(shape, t.shape)):
        if full % part:
            raise ValueError(f"dimension {axis}: {full} is not a multiple of {part}")
        if full != part:
            t = t.repeat_interleave(full // part, dim=axis)
    return t


@kernel("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a):
    data, scale, offset = a.tensor("data"), a.tensor("scale"), a.tensor("offset")
    out = data.to(torch.float32)
    if offset is not None:
        out = out - _repeat_blocks(offset.to(torch.float32), tuple(data.shape))
    return (out * _repeat_blocks(scale.to(torch.float32), tuple(data.shape))).to(scale.dtype)


@kernel("constexpr_lut_to_dense")
def _lut_to_dense(a):
    lut = a.tensor("lut")
    if a.opset() == "iOS16":  # indices packed LSB-first in uint8, one flat LUT
        shape = a.ints("shape")
        count = int(np.prod(shape))
        nbits = int(round(math.log2(lut.numel())))
        packed = a.tensor("indices").numpy().astype(np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[: count * nbits].reshape(count, nbits)
        indices = (bits.astype(np.int64) << np.arange(nbits)).sum(axis=1)
        return lut.reshape(-1)[torch.from_numpy(indices)].reshape(shape)
    indices = a.tensor("indices").to(torch.int64)
    if lut.shape[-1] != 1:
        raise UnsupportedOpError(f"vector palettization (vector size {lut.shape[-1]}) is not supported")
    per_block = lut[..., 0]  # [*blocks, num_entries]
    full = _repeat_blocks(per_block, (*indices.shape, per_block.shape[-1]))
    return torch.gather(full, -1, indices.unsqueeze(-1)).squeeze(-1)


@kernel("constexpr_cast")
def _constexpr_cast(a):
    return a.tensor("source_val").to(torch_dtype(a.str("output_dtype")))


@kernel("dequantize")
def _dequantize(a):
    x, scale, zero_point, axis = a.tensor("input"), a.tensor("scale"), a.tensor("zero_point"), a.int("axis")
    shape = [1] * x.dim()
    if scale.numel() > 1:
        shape[_axis(axis, x.dim())] = -1
    out = x.to(torch.float32)
    if zero_point is not None:
        out = out - zero_point.to(torch.float32).reshape(shape)
    return (out * scale.to(torch.float32).reshape(shape)).to(scale.dtype)


# --------------------------------------------------------------------------- elementwise

_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum,
    "pow": torch.pow, "mod": torch.remainder, "floor_div": lambda x, y: torch.div(x, y, rounding_mode="floor"),
    "real_div": torch.true_divide,
    "equal": torch.eq, "not_equal": torch.ne, "less": torch.lt, "less_equal": torch.le, "greater": torch.gt,
    "greater_equal": torch.ge, "logical_and": torch.logical_and, "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}
_COMPARISONS = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}


def _narrow_int(result: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """An integer result computed in int64, narrowed to `dtype`; a value outside its range is refused.

    Core ML documents no integer overflow behaviour (torch and NumPy wrap around), so a program that
    overflows has no documented answer.
    """
    info = torch.iinfo(dtype)
    if result.numel() and (int(result.min()) < info.min or int(result.max()) > info.max):
        bad = result[(result < info.min) | (result > info.max)][0]
        raise UnsupportedOpError(f"{what} gives {int(bad)}, outside {str(dtype).replace('torch.', '')}'s range: "
                                 "Core ML's integer overflow behaviour is not documented")
    return result.to(dtype)


def _integer_binary(op: str, x: torch.Tensor, y: torch.Tensor, out: torch.dtype) -> torch.Tensor:
    """Integer arithmetic, exact in int64 and then narrowed; the undocumented corners are refused."""
    x64, y64 = x.to(torch.int64), y.to(torch.int64)
    if op in ("floor_div", "mod", "real_div") and bool((y64 == 0).any()):
        raise UnsupportedOpError(f"integer {op} by zero: Core ML's result is not documented")
    if op == "real_div":
        # integer shape arithmetic (a head size from a width): exact divisions have one answer; how
        # Core ML rounds an inexact one is not documented, so that is refused rather than guessed
        if bool((torch.remainder(x64, y64) != 0).any()):
            raise UnsupportedOpError("real_div of integer tensors with a remainder: Core ML's rounding of the result "
                                     "is not documented")
        return _narrow_int(torch.div(x64, y64, rounding_mode="trunc"), out, op)
    if op == "floor_div":
        return _narrow_int(torch.div(x64, y64, rounding_mode="floor"), out, op)
    if op == "pow":
        if bool((y64 < 0).any()):
            raise UnsupportedOpError("integer pow with a negative exponent: Core ML's result is not documented")
        if bool((torch.pow(x64.double(), y64.double()).abs() > 2.0 ** 62).any()):
            raise UnsupportedOpError("integer pow overflows: Core ML's integer overflow behaviour is not documented")
    return _narrow_int(_BINARY[op](x64, y64), out, op)


@kernel(*_BINARY)
def _binary(a):
    x, y = a.tensor("x"), a.tensor("y")
    op = a.op.op_type
    if op == "floor_div" and x.is_floating_point():
        # documented as x / y rounded towards -inf: the quotient in the op's precision, then floor.
        # torch (and coremltools' constant folding) floor-divide through fmod: 1 // 0.1 is 9, not 10
        return torch.floor(torch.true_divide(_f(x), _f(y)).to(a.out_dtype()))
    if x.dtype == torch.bool or op in _COMPARISONS or x.is_floating_point() or y.is_floating_point():
        return _BINARY[op](_f(x), _f(y))
    return _integer_binary(op, x, y, a.out_dtype())


_UNARY = {
    "abs": torch.abs, "acos": torch.acos, "asin": torch.asin, "atan": torch.atan, "atanh": torch.atanh,
    "ceil": torch.ceil, "cos": torch.cos, "cosh": torch.cosh, "erf": torch.erf, "exp": torch.exp,
    "exp2": torch.exp2, "floor": torch.floor, "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh,
    "sqrt": torch.sqrt, "square": torch.square, "tan": torch.tan, "tanh": torch.tanh,
    # MIL documents 0.5 -> 0 and folds constants with np.round: halves go to the even neighbour
    "round": torch.round,
    "logical_not": torch.logical_not, "relu": torch.relu, "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "sigmoid": torch.sigmoid, "softplus": F.softplus, "softsign": F.softsign, "silu": F.silu,
}


@kernel(*_UNARY)
def _unary(a):
    x = a.tensor("x")
    op = a.op.op_type
    if op in ("abs", "square", "exp2", "sign") and not x.is_floating_point() and x.dtype != torch.bool:
        x64 = x.to(torch.int64)
        if op == "exp2":  # an int32 exp2 is int32: only 2**0 ... 2**30 are integers that fit
            if bool(((x64 < 0) | (x64 > 30)).any()):
                raise UnsupportedOpError("exp2 of an int32 exponent outside 0..30: the result is not an int32, and "
                                         "Core ML's rounding or overflow of it is not documented")
            return _narrow_int(torch.pow(2, x64), a.out_dtype(), op)
        return _narrow_int(_UNARY[op](x64), a.out_dtype(), op)
    return _UNARY[op](_f(x))


@kernel("inverse")
def _inverse(a):
    return 1.0 / (_f(a.tensor("x")) + a.float("epsilon"))


@kernel("log")
def _log(a):
    return torch.log(_f(a.tensor("x")) + a.float("epsilon"))


@kernel("rsqrt")
def _rsqrt(a):
    return torch.rsqrt(_f(a.tensor("x")) + a.float("epsilon"))


@kernel("threshold")
def _threshold(a):
    x = _f(a.tensor("x"))
    return torch.maximum(x, torch.tensor(a.float("alpha"), dtype=x.dtype))


@kernel("clip")
def _clip(a):
    return torch.clamp(_f(a.tensor("x")), a.float("alpha"), a.float("beta"))


@kernel("cast")
def _cast(a):
    x, dtype = a.tensor("x"), a.str("dtype")
    want = torch_dtype(dtype)
    if want.is_floating_point or want == torch.bool or x.dtype == torch.bool:
        return x.to(want)
    if x.is_floating_point():
        # float -> int truncates towards zero (coremltools folds casts with NumPy's astype); a NaN, an
        # infinity or a value outside the target's range has no documented result (torch and NumPy
        # give whatever the CPU's conversion instruction gives)
        if not bool(torch.isfinite(x).all()):
            raise UnsupportedOpError(f"cast of NaN or infinity to {dtype}: Core ML's result is not documented")
        return _narrow_int(torch.trunc(x.double()).clamp(-2.0 ** 62, 2.0 ** 62).to(torch.int64), want,
                           f"cast to {dtype}")
    return _narrow_int(x.to(torch.int64), want, f"cast to {dtype}")


@kernel("leaky_relu")
def _leaky_relu(a):
    return F.leaky_relu(_f(a.tensor("x")), a.float("alpha"))


@kernel("elu")
def _elu(a):
    return F.elu(_f(a.tensor("x")), a.float("alpha"))


@kernel("gelu")
def _gelu(a):
    x, mode = _f(a.tensor("x")), a.str("mode") or "EXACT"
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise UnsupportedOpError(f"gelu mode {mode!r}")


@kernel("sigmoid_hard")
def _sigmoid_hard(a):
    return torch.clamp(a.float("alpha") * _f(a.tensor("x")) + a.float("beta"), 0.0, 1.0)


@kernel("clamped_relu")
def _clamped_relu(a):
    x = _f(a.tensor("x"))
    return torch.clamp(torch.where(x >= 0, x, a.float("alpha") * x), max=a.float("beta"))


@kernel("scaled_tanh")
def _scaled_tanh(a):
    return a.float("alpha") * torch.tanh(a.float("beta") * _f(a.tensor("x")))


@kernel("linear_activation")
def _linear_activation(a):
    return a.float("alpha") * _f(a.tensor("x")) + a.float("beta")


@kernel("thresholded_relu")
def _thresholded_relu(a):
    x = _f(a.tensor("x"))
    return torch.where(x >= a.float("alpha"), x, torch.zeros_like(x))


@kernel("prelu")
def _prelu(a):
    x, alpha = _f(a.tensor("x")), _f(a.tensor("alpha"))
    return torch.where(x > 0, x, x * alpha.reshape(1, -1, *([1] * (x.dim() - 2))))


@kernel("softplus_parametric")
def _softplus_parametric(a):
    x = _f(a.tensor("x"))
    alpha, beta = _channel(a.tensor("alpha"), x.dim()), _channel(a.tensor("beta"), x.dim())
    # alpha_i * log(1 + e^(beta_i * x)), with log(1 + e^z) evaluated as logaddexp(0, z): no overflow at large z
    return alpha * torch.logaddexp(torch.zeros(()), beta * x)


@kernel("softmax")
def _softmax(a):
    return torch.softmax(_f(a.tensor("x")), dim=a.int("axis"))


@kernel("select")
def _select(a):
    return torch.where(a.tensor("cond").to(torch.bool), _f(a.tensor("a")), _f(a.tensor("b")))


# --------------------------------------------------------------------------- linear algebra


@kernel("linear")
def _linear(a):
    x = a.tensor("x")
    bias = a.tensor("bias")
    if not x.is_floating_point():
        raise UnsupportedOpError("integer linear")
    return F.linear(_f(x), _f(a.tensor("weight")), None if bias is None else _f(bias))


@kernel("matmul")
def _matmul(a):
    x, y = _f(a.tensor("x")), _f(a.tensor("y"))
    if a.bool("transpose_x") and x.dim() >= 2:
        x = x.transpose(-1, -2)
    if a.bool("transpose_y") and y.dim() >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


# --------------------------------------------------------------------------- convolution and pooling


def _padding(a, spatial: list[int], kernel_sizes: list[int], strides: list[int],
             dilations: list[int]) -> tuple[list[int], list[int]]:
    """(before, after) padding per spatial dimension for pad_type valid, custom, same or same_lower."""
    pad_type = a.str("pad_type") or "valid"
    n = len(spatial)
    if pad_type == "valid":
        return [0] * n, [0] * n
    if pad_type == "custom":
        pad = a.ints("pad") or [0] * (2 * n)
        return pad[0::2], pad[1::2]
    if pad_type in ("same", "same_lower"):
        before, after = [], []
        for size, k, s, d in zip(spatial, kernel_sizes, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            before.append(small if pad_type == "same" else large)
            after.append(large if pad_type == "same" else small)
        return before, after
    raise UnsupportedOpError(f"pad_type {pad_type!r}")


def _pad_spatial(x: torch.Tensor, before: list[int], after: list[int], value: float = 0.0) -> torch.Tensor:
    pairs = []
    for b, e in zip(reversed(before), reversed(after)):  # F.pad takes the last dimension first
        pairs += [b, e]
    return F.pad(x, pairs, value=value) if any(pairs) else x


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@kernel("conv")
def _conv(a):
    x, weight, bias = _f(a.tensor("x")), _f(a.tensor("weight")), a.tensor("bias")
    n = x.dim() - 2
    strides = a.ints("strides") or [1] * n
    dilations = a.ints("dilations") or [1] * n
    before, after = _padding(a, list(x.shape[2:]), list(weight.shape[2:]), strides, dilations)
    x = _pad_spatial(x, before, after)
    return _CONV[n](x, weight, None if bias is None else _f(bias), stride=strides, dilation=dilations,
                    groups=a.int("groups") or 1)


@kernel("conv_transpose")
def _conv_transpose(a):
    x, weight, bias = _f(a.tensor("x")), _f(a.tensor("weight")), a.tensor("bias")
    n = x.dim() - 2
    strides = a.ints("strides") or [1] * n
    dilations = a.ints("dilations") or [1] * n
    pad_type = a.str("pad_type") or "valid"
    if pad_type == "custom":
        pad = a.ints("pad") or [0] * (2 * n)
        before, after = pad[0::2], pad[1::2]
    elif pad_type == "valid":
        before, after = [0] * n, [0] * n
    else:
        raise UnsupportedOpError(f"conv_transpose with pad_type {pad_type!r}: how Core ML splits the crop is not "
                                 "documented")
    full = _CONV_T[n](x, weight, None, stride=strides, dilation=dilations, groups=a.int("groups") or 1)
    sizes = [f - b - e for f, b, e in zip(full.shape[2:], before, after)]
    output_shape = a.ints("output_shape")
    if output_shape is not None:
        sizes = output_shape[-n:]
    out = full
    for axis, (start, size) in enumerate(zip(before, sizes), start=2):
        available = out.shape[axis] - start
        if size > available:  # positions no input reaches (torch's output_padding): only the bias lands there
            pad = [0, 0] * (out.dim() - axis - 1) + [0, size - available]
            out = F.pad(out, pad)
        out = out.narrow(axis, start, size)
    if bias is not None:
        out = out + _f(bias).reshape(1, -1, *([1] * n))
    return out


def _pool_size(size: int, k: int, s: int, before: int, after: int, ceil: bool) -> int:
    """A pooled dimension's size as avg_pool documents it (max_pool and l2_pool refer to it)."""
    total = size + before + after
    if not ceil:
        return (total - k) // s + 1
    out = (total - k + s - 1) // s + 1
    if (out - 1) * s >= size + before and before + after > 0:  # the last window starts in the end padding
        out -= 1
    return out


def _pool_geometry(a, x: torch.Tensor):
    """Per spatial dimension: kernel, stride, padding before and after, the overhang of ceil_mode's last
    window past the padded input, and the output size."""
    n = x.dim() - 2
    kernel_sizes = a.ints("kernel_sizes")
    strides = a.ints("strides") or [1] * n
    before, after = _padding(a, list(x.shape[2:]), kernel_sizes, strides, [1] * n)
    ceil = bool(a.bool("ceil_mode"))
    outs = [_pool_size(size, k, s, b, e, ceil)
            for size, k, s, b, e in zip(x.shape[2:], kernel_sizes, strides, before, after)]
    overhang = [max(0, (o - 1) * s + k - (size + b + e))
                for o, size, k, s, b, e in zip(outs, x.shape[2:], kernel_sizes, strides, before, after)]
    return kernel_sizes, strides, before, after, overhang, outs


def _window_sums(t: torch.Tensor, k: list[int], s: list[int], outs: list[int]) -> torch.Tensor:
    """Sum of `t` (already padded so that every window is whole) over each of the `outs` windows."""
    squeeze = t.dim() == 3
    if squeeze:  # avg_pool1d has no divisor_override: pool 1-D as 2-D with a height of 1
        t, k, s = t.unsqueeze(2), [1, *k], [1, *s]
    pool = F.avg_pool2d if t.dim() == 4 else F.avg_pool3d
    sums = pool(t, k, s, padding=0, divisor_override=1)
    if squeeze:
        sums = sums.squeeze(2)
    for axis, size in enumerate(outs, start=2):
        sums = sums.narrow(axis, 0, size)
    return sums


def _pool_inputs(a, x: torch.Tensor):
    """(padded, (kernel, strides, output sizes), input elements per window) for a pooling op on `x`.

    ``padded(t, pad_value, overhang_value)`` pads `t` with the op's padding and, past it, with the
    overhang that makes ceil_mode's last window whole, so that every window is a plain valid one.
    """
    k, s, before, after, overhang, outs = _pool_geometry(a, x)

    def padded(t, pad_value, overhang_value):
        t = _pad_spatial(t, before, after, pad_value)
        return _pad_spatial(t, [0] * len(k), overhang, overhang_value)

    ones = torch.ones((1, 1, *x.shape[2:]), dtype=torch.float32)
    present = _window_sums(padded(ones, 0.0, 0.0), k, s, outs)  # input elements in each window
    return padded, (k, s, outs), present


def _refuse_empty_windows(present: torch.Tensor, what: str) -> None:
    if bool((present == 0).any()):
        raise UnsupportedOpError(f"a window that holds no input element (all padding, or a ceil_mode window past "
                                 f"the input): Core ML's {what} of it is not documented")


@kernel("max_pool")
def _max_pool(a):
    x = _f(a.tensor("x"))
    padded, (k, s, outs), present = _pool_inputs(a, x)
    # Padding never wins: coremltools maps torch's max_pool2d(padding=p), whose padding is -inf, onto it
    _refuse_empty_windows(present, "maximum")
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[x.dim() - 2]
    out = pool(padded(x, -math.inf, -math.inf), k, s, padding=0)
    for axis, size in enumerate(outs, start=2):
        out = out.narrow(axis, 0, size)
    return out


@kernel("avg_pool")
def _avg_pool(a):
    x = _f(a.tensor("x"))
    padded, (k, s, outs), present = _pool_inputs(a, x)
    sums = _window_sums(padded(x, 0.0, 0.0), k, s, outs)
    if a.bool("exclude_padding_from_average"):
        _refuse_empty_windows(present, "average (excluding padding)")
        return sums / present
    # ceil_mode "same as PyTorch's": padding counts in the divisor, the last window's overhang does not
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=torch.float32)
    counted = _window_sums(padded(ones, 1.0, 0.0), k, s, outs)
    _refuse_empty_windows(counted, "average")
    return sums / counted


@kernel("l2_pool")
def _l2_pool(a):
    x = _f(a.tensor("x"))
    padded, (k, s, outs), _ = _pool_inputs(a, x)
    return torch.sqrt(_window_sums(padded(x * x, 0.0, 0.0), k, s, outs))


# --------------------------------------------------------------------------- normalization


def _channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    return _f(t).reshape(1, -1, *([1] * (rank - 2)))


@kernel("batch_norm")
def _batch_norm(a):
    x = _f(a.tensor("x"))
    out = (x - _channel(a.tensor("mean"), x.dim())) / torch.sqrt(_channel(a.tensor("variance"), x.dim())
                                                                  + a.float("epsilon"))
    if a.has("gamma"):
        out = out * _channel(a.tensor("gamma"), x.dim())
    if a.has("beta"):
        out = out + _channel(a.tensor("beta"), x.dim())
    return out


def _normalize(x: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


@kernel("instance_norm")
def _instance_norm(a):
    x = _f(a.tensor("x"))
    out = _normalize(x, list(range(2, x.dim())), a.float("epsilon"))
    if a.has("gamma"):
        out = out * _channel(a.tensor("gamma"), x.dim())
    if a.has("beta"):
        out = out + _channel(a.tensor("beta"), x.dim())
    return out


@kernel("layer_norm")
def _layer_norm(a):
    x = _f(a.tensor("x"))
    axes = a.ints("axes")
    axes = list(range(x.dim())) if axes is None else [_axis(v, x.dim()) for v in axes]
    if axes != sorted(axes):
        raise UnsupportedOpError(f"layer_norm with unsorted axes {axes}")
    out = _normalize(x, axes, a.float("epsilon"))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
    if a.has("gamma"):
        out = out * _f(a.tensor("gamma")).reshape(shape)
    if a.has("beta"):
        out = out + _f(a.tensor("beta")).reshape(shape)
    return out


@kernel("l2_norm")
def _l2_norm(a):
    x = _f(a.tensor("x"))
    dims = list(range(x.dim() - 3, x.dim()))
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + a.float("epsilon"))


# --------------------------------------------------------------------------- reductions

_REDUCE = {
    "reduce_mean": lambda x, d: x.mean(dim=d, keepdim=True),
    "reduce_sum": lambda x, d: x.sum(dim=d, keepdim=True),
    "reduce_max": lambda x, d: x.amax(dim=d, keepdim=True),
    "reduce_min": lambda x, d: x.amin(dim=d, keepdim=True),
    "reduce_sum_square": lambda x, d: (x * x).sum(dim=d, keepdim=True),
    "reduce_l1_norm": lambda x, d: x.abs().sum(dim=d, keepdim=True),
    "reduce_l2_norm": lambda x, d: torch.sqrt((x * x).sum(dim=d, keepdim=True)),
    "reduce_log_sum": lambda x, d: torch.log(x.sum(dim=d, keepdim=True)),
    "reduce_log_sum_exp": lambda x, d: torch.logsumexp(x, dim=d, keepdim=True),
    "reduce_prod": None,
}


_INTEGER_EXACT = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_sum_square", "reduce_l1_norm"}


@kernel(*_REDUCE)
def _reduce(a):
    x = _f(a.tensor("x"))
    op = a.op.op_type
    axes = a.ints("axes")
    dims = list(range(x.dim())) if axes is None else sorted(_axis(v, x.dim()) for v in axes)
    integer = not x.is_floating_point()
    if integer:
        if op not in _INTEGER_EXACT | {"reduce_mean"}:
            raise UnsupportedOpError(f"{op} of an int32 tensor: the result is not an integer, and how Core ML rounds "
                                     "it to int32 is not documented")
        x = x.to(torch.int64)  # exact; narrowed to int32 below, where an overflow is refused
    if op == "reduce_prod":
        out = x
        for d in dims:
            out = out.prod(dim=d, keepdim=True)
    elif op == "reduce_mean" and integer:
        total, count = x.sum(dim=dims, keepdim=True), int(np.prod([x.shape[d] for d in dims]))
        if bool((torch.remainder(total, count) != 0).any()):
            raise UnsupportedOpError("reduce_mean of an int32 tensor with a remainder: how Core ML rounds the mean "
                                     "is not documented")
        out = torch.div(total, count, rounding_mode="trunc")
    else:
        out = _REDUCE[op](x, dims)
    if integer:  # Core ML reduces int32 to int32 (torch promotes integer sums to int64)
        out = _narrow_int(out, a.out_dtype(), op)
    if not a.bool("keep_dims"):
        for d in reversed(dims):
            out = out.squeeze(d)
    return out


@kernel("reduce_argmax", "reduce_argmin")
def _reduce_arg(a):
    x = _f(a.tensor("x"))
    axis = _axis(a.int("axis") if a.has("axis") else -1, x.dim())
    op = a.op.op_type
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise UnsupportedOpError(f"{op} over a NaN: Core ML's result is not documented")
    best = (x.amax if op == "reduce_argmax" else x.amin)(dim=axis, keepdim=True)
    if bool(((x == best).sum(dim=axis) > 1).any()):
        raise UnsupportedOpError(f"{op} with a tie for the {'largest' if op == 'reduce_argmax' else 'smallest'} "
                                 "value: Core ML documents that which of the tied indices it returns is not "
                                 "guaranteed")
    fn = torch.argmax if op == "reduce_argmax" else torch.argmin
    return fn(x, dim=axis, keepdim=bool(a.bool("keep_dims"))).to(a.out_dtype())


# --------------------------------------------------------------------------- image resizing


def _interpolate_axis(x: torch.Tensor, axis: int, grid: np.ndarray) -> torch.Tensor:
    """Linear interpolation of `x` along `axis` at (fractional) positions `grid`, clipped to the input."""
    size = x.shape[axis]
    grid = np.clip(grid, 0.0, size - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = torch.from_numpy((grid - low).astype(np.float32))
    shape = [1] * x.dim()
    shape[axis] = -1
    weight = weight.reshape(shape)
    return (x.index_select(axis, torch.from_numpy(low)) * (1 - weight)
            + x.index_select(axis, torch.from_numpy(high)) * weight)


def _bilinear_grid(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """Sample positions per coremltools' documented sampling modes (resize_bilinear's names)."""
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            return np.array([(size_in - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0])
        return i * (size_in - 1) / (size_out - 1)
    if mode == "DEFAULT":
        if size_out == 1:
            return np.zeros(1)
        return i * (size_in - size_in / size_out) / (size_out - 1)
    if mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        return 0.5 * delta + i * delta
    if mode == "UNALIGN_CORNERS":  # half-pixel centres
        spacing = size_in / size_out
        return i * spacing + 0.5 * spacing - 0.5
    if mode == "ASYMMETRIC":  # TF's legacy resize (neither aligned corners nor half-pixel centres)
        return i * size_in / size_out
    raise UnsupportedOpError(f"sampling mode {mode!r}")


def _bilinear(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    x = _f(x)
    x = _interpolate_axis(x, x.dim() - 2, _bilinear_grid(x.shape[-2], height, mode))
    return _interpolate_axis(x, x.dim() - 1, _bilinear_grid(x.shape[-1], width, mode))


@kernel("upsample_bilinear")
def _upsample_bilinear(a):
    x = a.tensor("x")
    sh, sw = a.float("scale_factor_height") or 1.0, a.float("scale_factor_width") or 1.0
    align = a.bool("align_corners")
    align = True if align is None else align
    half_pixel = a.bool("half_pixel_centers") if a.has("half_pixel_centers") else not align
    if align and half_pixel:
        raise UnsupportedOpError("align_corners and half_pixel_centers both true")
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half_pixel else "ASYMMETRIC")
    return _bilinear(x, math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw), mode)


@kernel("resize_bilinear")
def _resize_bilinear(a):
    return _bilinear(a.tensor("x"), a.int("target_size_height"), a.int("target_size_width"),
                     a.str("sampling_mode") or "DEFAULT")


def _nearest_integer(x: torch.Tensor, fh: float, fw: float) -> torch.Tensor:
    if fh != int(fh) or fw != int(fw) or fh < 1 or fw < 1:
        raise UnsupportedOpError(f"nearest-neighbour resize by non-integer factors ({fh:g}, {fw:g}): Core ML's "
                                 "sample positions are not documented")
    return x.repeat_interleave(int(fh), dim=-2).repeat_interleave(int(fw), dim=-1)


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(a):
    return _nearest_integer(a.tensor("x"), a.float("scale_factor_height") or 1.0,
                            a.float("scale_factor_width") or 1.0)


@kernel("resize_nearest_neighbor")
def _resize_nearest(a):
    x = a.tensor("x")
    return _nearest_integer(x, a.int("target_size_height") / x.shape[-2], a.int("target_size_width") / x.shape[-1])


# --------------------------------------------------------------------------- tensor transformations


@kernel("reshape")
def _reshape(a):
    x = a.tensor("x")
    shape = a.ints("shape")
    if 0 in shape:
        if a.opset() in ("iOS15", "iOS16"):  # 0 copies the same dimension of x (len(shape) == rank)
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        else:  # iOS17+: a 0 copies the dimension of x at the same position counted from the right
            offset = x.dim() - len(shape)
            shape = [(x.shape[i + offset] if 0 <= i + offset < x.dim() else 1) if s == 0 else s
                     for i, s in enumerate(shape)]
    return x.reshape(shape)


@kernel("transpose")
def _transpose(a):
    return a.tensor("x").permute(a.ints("perm")).contiguous()


@kernel("squeeze")
def _squeeze(a):
    x = a.tensor("x")
    axes = a.ints("axes")
    if axes is None:
        return x.squeeze()
    out = x
    for d in sorted((_axis(v, x.dim()) for v in axes), reverse=True):
        out = out.squeeze(d)
    return out


@kernel("expand_dims")
def _expand_dims(a):
    x = a.tensor("x")
    axes = a.ints("axes")
    rank = x.dim() + len(axes)
    out = x
    for d in sorted(v + rank if v < 0 else v for v in axes):
        out = out.unsqueeze(d)
    return out


@kernel("flatten2d")
def _flatten2d(a):
    x = a.tensor("x")
    axis = _axis(a.int("axis") if a.has("axis") else 1, x.dim())
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@kernel("slice_by_index")
def _slice_by_index(a):
    x = a.tensor("x")
    rank = x.dim()
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride") or [1] * rank
    begin_mask = a.bools("begin_mask") or [False] * rank
    end_mask = a.bools("end_mask") or [False] * rank
    squeeze_mask = a.bools("squeeze_mask") or [False] * rank
    index = []
    for d in range(rank):
        if squeeze_mask[d]:  # a pure index at begin[d], which begin_mask sets to 0
            index.append(0 if begin_mask[d] else begin[d])
        else:
            index.append(slice(None if begin_mask[d] else begin[d], None if end_mask[d] else end[d], stride[d]))
    out = x.numpy()[tuple(index)]  # NumPy: negative strides and indices as in MIL
    return torch.from_numpy(np.ascontiguousarray(out))


@kernel("slice_by_size")
def _slice_by_size(a):
    x = a.tensor("x")
    begin, size = a.ints("begin"), a.ints("size")
    index = tuple(slice(_axis(b, n), None if s == -1 else _axis(b, n) + s) for b, s, n in zip(begin, size, x.shape))
    return x[index].contiguous()


@kernel("concat")
def _concat(a):
    values = a.tensors("values")
    if values[0].dim() == 0:  # scalars (a shape assembled from gathered sizes) concatenate to a vector
        return torch.stack(values)
    axis = _axis(a.int("axis"), values[0].dim())
    if a.bool("interleave"):
        return torch.stack(values, dim=axis + 1).flatten(axis, axis + 1)
    return torch.cat(values, dim=axis)


@kernel("stack")
def _stack(a):
    values = a.tensors("values")
    return torch.stack(values, dim=_axis(a.int("axis"), values[0].dim() + 1))


@kernel("split")
def _split(a):
    x = a.tensor("x")
    axis = _axis(a.int("axis"), x.dim())
    sizes = a.ints("split_sizes")
    if sizes is None:
        count = a.int("num_splits")
        sizes = [x.shape[axis] // count] * count
    return tuple(t.contiguous() for t in torch.split(x, sizes, dim=axis))


@kernel("tile")
def _tile(a):
    return a.tensor("x").repeat(a.ints("reps"))


@kernel("pad")
def _pad(a):
    x = a.tensor("x")
    pad = a.ints("pad")
    mode = a.str("mode") or "constant"
    pairs = []
    for i in reversed(range(len(pad) // 2)):  # MIL: pairs for the last N dims, first to last; F.pad: last first
        pairs += [pad[2 * i], pad[2 * i + 1]]
    if mode == "constant":
        return F.pad(_f(x), pairs, value=a.float("constant_val") or 0.0)
    if mode not in ("reflect", "replicate"):
        raise UnsupportedOpError(f"pad mode {mode!r}")
    dims = len(pad) // 2
    y = _f(x)
    lead = y.shape[: y.dim() - dims]
    padded = F.pad(y.reshape(1, -1, *y.shape[y.dim() - dims:]), pairs, mode=mode)  # wants (N, C, *spatial)
    return padded.reshape((*lead, *padded.shape[2:]))


@kernel("shape")
def _shape(a):
    return torch.tensor(list(a.tensor("x").shape), dtype=a.out_dtype())


@kernel("fill")
def _fill(a):
    return torch.full(a.ints("shape"), a.float("value") if a.out_dtype().is_floating_point else a.int("value"),
                      dtype=a.out_dtype())


@kernel("range_1d")
def _range_1d(a):
    start, end, step = a.tensor("start"), a.tensor("end"), a.tensor("step")
    return torch.arange(start.item(), end.item(), step.item(), dtype=a.out_dtype())


def _checked_indices(a, size: int, axis_name: str) -> torch.Tensor:
    """The op's indices along a dimension of `size`, negative ones wrapped where the opset allows them.

    iOS15/iOS16 take ``-size <= i < size``; from iOS17 negative indices are out of bounds. Core ML's
    result for an out-of-bounds index is undefined ("undefined but memory safe"), or an error where
    ``validate_indices`` is set: both are refused here, naming the index.
    """
    indices = a.tensor("indices").to(torch.int64)
    negative = a.opset() in ("iOS15", "iOS16")
    low = -size if negative else 0
    bad = (indices < low) | (indices >= size)
    if bool(bad.any()):
        allowed = f"{low}..{size - 1}"
        where = f"index {int(indices[bad][0])} out of bounds for {axis_name} of size {size} ({a.opset()} allows " \
                f"{allowed})"
        if a.bool("validate_indices"):
            raise IndexError(f"{where}: with validate_indices the Core ML runtime raises an error")
        raise UnsupportedOpError(f"{where}: Core ML's result for it is undefined")
    return torch.where(indices < 0, indices + size, indices)


@kernel("gather")
def _gather(a):
    x = a.tensor("x")
    axis = _axis(a.int("axis") if a.has("axis") else 0, x.dim())
    if a.has("batch_dims") and a.int("batch_dims"):
        raise UnsupportedOpError("gather with batch_dims > 0")
    indices = _checked_indices(a, x.shape[axis], f"axis {axis}")
    out = x.index_select(axis, indices.reshape(-1))
    return out.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1:]))  # a scalar index drops the axis


@kernel("gather_along_axis")
def _gather_along_axis(a):
    x = a.tensor("x")
    axis = _axis(a.int("axis") if a.has("axis") else 0, x.dim())
    return torch.gather(x, axis, _checked_indices(a, x.shape[axis], f"axis {axis}"))


@kernel("gather_nd")
def _gather_nd(a):
    x, indices = a.tensor("x"), a.tensor("indices").to(torch.int64)
    if a.has("batch_dims") and a.int("batch_dims"):
        raise UnsupportedOpError("gather_nd with batch_dims > 0")
    depth = indices.shape[-1]
    sizes = torch.tensor(x.shape[:depth], dtype=torch.int64)
    # gather_nd documents no negative indices (from iOS17 they are out of bounds): only 0 <= i < size
    bad = (indices < 0) | (indices >= sizes)
    if bool(bad.any()):
        position = [int(v) for v in bad.nonzero()[0]]
        axis = position[-1]
        where = f"index {int(indices[tuple(position)])} out of bounds for axis {axis} of size {x.shape[axis]}"
        if a.bool("validate_indices"):
            raise IndexError(f"{where}: with validate_indices the Core ML runtime raises an error")
        raise UnsupportedOpError(f"{where}: Core ML documents only 0 <= index < size, the result for it is undefined")
    flat = indices.reshape(-1, depth)
    out = x[tuple(flat[:, d] for d in range(depth))]
    return out.reshape((*indices.shape[:-1], *x.shape[depth:]))


@kernel("pixel_shuffle")
def _pixel_shuffle(a):
    return F.pixel_shuffle(a.tensor("x"), a.int("upscale_factor"))


@kernel("pixel_unshuffle")
def _pixel_unshuffle(a):
    return F.pixel_unshuffle(a.tensor("x"), a.int("downscale_factor"))


# --------------------------------------------------------------------------- recurrent layers

_RNN_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "linear": lambda t: t}


def _rnn_activation(a, name: str, default: str):
    kind = (a.str(name) or default).lower()
    if kind not in _RNN_ACTIVATIONS:
        raise UnsupportedOpError(f"{name} {kind!r}")
    return _RNN_ACTIVATIONS[kind]


def _lstm_direction(x, h, c, w_ih, w_hh, bias, peephole, reverse: bool, acts, clip):
    """One direction over the sequence; MIL's gate order is [input, forget, output, cell]."""
    recurrent, cell_act, act = acts
    hidden = h.shape[-1]
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = [None] * x.shape[0]
    for t in steps:
        gates = x[t] @ w_ih.T + h @ w_hh.T + (bias if bias is not None else 0)
        gi, gf, go, gz = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        if peephole is not None:
            gi = gi + peephole[:hidden] * c
            gf = gf + peephole[hidden:2 * hidden] * c
        z = cell_act(gz)
        if clip is not None:
            z = z.clamp(-clip, clip)
        c = recurrent(gf) * c + recurrent(gi) * z
        if peephole is not None:
            go = go + peephole[2 * hidden:] * c
        h = recurrent(go) * act(c)
        outputs[t] = h
    return torch.stack(outputs), h, c


@kernel("lstm")
def _lstm(a):
    x = _f(a.tensor("x"))
    direction = a.str("direction") or "forward"
    acts = (_rnn_activation(a, "recurrent_activation", "sigmoid"), _rnn_activation(a, "cell_activation", "tanh"),
            _rnn_activation(a, "activation", "tanh"))
    clip = a.float("clip") if a.has("clip") else None
    h0, c0 = _f(a.tensor("initial_h")), _f(a.tensor("initial_c"))

    def opt(name):
        return _f(a.tensor(name)) if a.has(name) else None

    forward = (opt("weight_ih"), opt("weight_hh"), opt("bias"), opt("peephole"))
    if direction == "bidirectional":
        hidden = h0.shape[-1] // 2
        out_f, h_f, c_f = _lstm_direction(x, h0[:, :hidden], c0[:, :hidden], *forward, False, acts, clip)
        back = (opt("weight_ih_back"), opt("weight_hh_back"), opt("bias_back"), opt("peephole_back"))
        out_b, h_b, c_b = _lstm_direction(x, h0[:, hidden:], c0[:, hidden:], *back, True, acts, clip)
        out, h, c = torch.cat([out_f, out_b], -1), torch.cat([h_f, h_b], -1), torch.cat([c_f, c_b], -1)
    elif direction in ("forward", "reverse"):
        out, h, c = _lstm_direction(x, h0, c0, *forward, direction == "reverse", acts, clip)
    else:
        raise UnsupportedOpError(f"direction {direction!r}")
    if not (a.bool("output_sequence") if a.has("output_sequence") else False):
        out = h.unsqueeze(0)  # the final step's hidden state, <1, b, D*H>
    return out, h, c
