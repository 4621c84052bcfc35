"""Structured inputs and outputs: outputs matched by name (dicts, ModelOutput, nested tuples) in every
format, keyword inputs, integer inputs, and the case errors that name the real outputs."""

from __future__ import annotations

import pytest

from conftest import write_case
from parity.catalog import load_case
from parity.errors import CaseError
from parity.session import Session

MODELS = '''
import torch
from torch import nn


class Heads(nn.Module):
    """A dict of two heads whose values differ in scale, so a swap cannot pass."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return {"boxes": torch.sigmoid(self.a(x)), "class_logits": 10 * self.b(x)}


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)

    def forward(self, x):
        h = self.a(x)
        return {"logits": h, "hidden_states": (h * 2, h * 3), "unused": None}


class Keywords(nn.Module):
    """forward(tokens, mask): the case lists mask first, so only keywords line up."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 5)

    def forward(self, tokens, mask):
        e = self.embed(tokens) * mask.unsqueeze(-1).float()
        return e.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).float()


def heads():
    torch.manual_seed(0)
    return Heads().eval()


def nested():
    return Nested().eval()


def keywords():
    return Keywords().eval()


def two_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x, y):
            return self.a(x), y * 2

    return Two().eval()


def hf_output():
    from transformers.modeling_outputs import SequenceClassifierOutput

    class HF(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x):
            return SequenceClassifierOutput(logits=self.a(x))

    return HF().eval()
'''

FORMATS = "[torchscript, onnx, pt2]"


@pytest.fixture
def cases(tmp_path):
    d = tmp_path / "cases"
    d.mkdir()
    (d / "structured_models.py").write_text(MODELS)
    session = Session(tmp_path / "build", tmp_path / "golden")

    def make(name: str, body: str):
        return session.case_run(load_case(write_case(d, name, body)))

    yield make
    session.close()


def test_dict_outputs_are_matched_by_name_in_every_format(cases):
    run = cases("heads", f"""
        model: {{factory: 'structured_models:heads'}}
        inputs: {{x: {{shape: [6]}}}}
        outputs: [class_logits, boxes]
        formats: {FORMATS}
        backends: [cpu]
        """)
    reference = run.reference(2)
    assert list(reference) == ["class_logits", "boxes"]
    assert reference["class_logits"].shape == (2, 3) and reference["boxes"].shape == (2, 4)
    for fmt in ("torchscript", "onnx", "pt2"):
        got = run.outputs(fmt, "cpu", 2)
        assert list(got) == ["class_logits", "boxes"]
        for name in got:  # by name: listing them in another order than the dict's cannot swap them
            assert got[name].shape == reference[name].shape
            assert abs(got[name] - reference[name]).max() < 1e-5, (fmt, name)
        assert "outputs flattened" in run.artefact_info(fmt)["wrapped"]


def test_nested_outputs_get_dotted_names_and_none_is_left_out(cases):
    run = cases("nested", """
        model: {factory: 'structured_models:nested'}
        inputs: {x: {shape: [6]}}
        formats: [torchscript, onnx]
        backends: [cpu]
        """)
    assert run.output_names == ["logits", "hidden_states.0", "hidden_states.1"]
    ref = run.reference(1)
    assert abs(ref["hidden_states.1"] - 3 * ref["logits"]).max() < 1e-5
    got = run.outputs("onnx", "cpu", 1)
    assert abs(got["hidden_states.1"] - ref["hidden_states.1"]).max() < 1e-5


def test_a_hugging_face_model_output_is_named_by_its_fields(cases):
    pytest.importorskip("transformers")
    run = cases("hf", """
        model: {factory: 'structured_models:hf_output'}
        inputs: {x: {shape: [6]}}
        outputs: [logits]
        formats: [torchscript, pt2]
        backends: [cpu]
        """)
    assert run.output_names == ["logits"]
    for fmt in ("torchscript", "pt2"):
        assert abs(run.outputs(fmt, "cpu", 2)["logits"] - run.reference(2)["logits"]).max() < 1e-5


def test_an_unknown_output_name_is_a_case_error_listing_the_real_ones(cases):
    run = cases("bad_name", """
        model: {factory: 'structured_models:heads'}
        inputs: {x: {shape: [6]}}
        outputs: [scores]
        formats: [onnx]
        backends: [cpu]
        """)
    with pytest.raises(CaseError) as e:
        run.reference(1)
    assert e.value.field == "outputs"
    assert "no output named 'scores'" in str(e.value) and "boxes, class_logits" in str(e.value)
    assert str(e.value).startswith(str(run.case.path))


def test_unnamed_outputs_are_named_by_position_and_a_wrong_count_says_so(cases):
    run = cases("positional", """
        model: {factory: 'structured_models:two_outputs'}
        inputs: {x: {shape: [6]}, y: {shape: [2]}}
        outputs: [a, b]
        formats: [onnx]
        backends: [cpu]
        """)
    assert run.output_names == ["a", "b"]
    wrong = cases("count", """
        model: {factory: 'structured_models:two_outputs'}
        inputs: {x: {shape: [6]}, y: {shape: [2]}}
        outputs: [a]
        formats: [onnx]
        backends: [cpu]
        """)
    with pytest.raises(CaseError, match=r"lists 1 name\(s\) but the model returns 2 unnamed tensor\(s\) "
                                        r"\(output.0, output.1\)"):
        wrong.reference(1)


def test_inputs_go_by_keyword_when_the_case_orders_them_differently(cases):
    run = cases("keywords", f"""
        model: {{factory: 'structured_models:keywords'}}
        inputs:
          mask: {{shape: [7], dtype: int64, distribution: mask, padding: mixed}}
          tokens: {{shape: [7], dtype: int64, distribution: tokens, high: 20, mask: mask}}
        formats: {FORMATS}
        backends: [cpu]
        batch_sizes: [1, 3]
        """)
    ref = run.reference(3)["output"]
    assert ref.shape == (3, 5)
    for fmt in ("torchscript", "onnx", "pt2"):
        assert abs(run.outputs(fmt, "cpu", 3)["output"] - ref).max() < 1e-5, fmt
    assert "by keyword (mask, tokens)" in run.artefact_info("onnx")["wrapped"]


def test_token_ids_beyond_the_vocabulary_are_a_case_error(cases):
    run = cases("vocab", """
        model: {factory: 'structured_models:keywords'}
        inputs:
          tokens: {shape: [7], dtype: int64, distribution: tokens, high: 50}
          mask: {shape: [7], dtype: int64, distribution: mask}
        formats: [onnx]
        backends: [cpu]
        """)
    with pytest.raises(CaseError) as e:
        run.reference(1)
    assert e.value.field == "inputs.tokens.high"
    assert "vocabulary has 20 ids" in str(e.value) and "set high: 20" in str(e.value)


def test_a_prebuilt_artefact_with_other_output_names_needs_a_mapping(cases, tmp_path):
    """Outputs of a prebuilt artefact are matched by name, never silently by position: its own names
    differ here and its order is the reverse of the case's."""
    import numpy as np
    import torch

    first = cases("first", """
        model: {factory: 'structured_models:heads'}
        inputs: {x: {shape: [6]}}
        formats: [onnx]
        backends: [cpu]
        """)
    path = tmp_path / "cases" / "prebuilt.onnx"
    torch.onnx.export(_reversed_heads(first.model), (torch.randn(2, 6),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["cls", "box"], dynamic_axes={"x": {0: "b"}})
    body = """
        model: {factory: 'structured_models:heads'}
        inputs: {x: {shape: [6]}}
        outputs: [boxes, class_logits]
        formats: [onnx]
        backends: [cpu]
        export:
          onnx: {artefact: prebuilt.onnx}
        """
    unmapped = cases("unmapped", body)
    with pytest.raises(Exception, match=r"named cls, box; the case compares boxes, class_logits\. Map them by name "
                                        r"with export\.onnx\.outputs"):
        unmapped.outputs("onnx", "cpu", 2)
    mapped = cases("mapped", body.replace("{artefact: prebuilt.onnx}",
                                          "{artefact: prebuilt.onnx, outputs: {boxes: box, class_logits: cls}}"))
    got, want = mapped.outputs("onnx", "cpu", 2), mapped.reference(2)
    assert list(got) == ["boxes", "class_logits"]
    for name in want:
        assert np.abs(got[name] - want[name]).max() < 1e-5, name


def _reversed_heads(model):
    import torch

    class Reversed(torch.nn.Module):
        def __init__(self, heads):
            super().__init__()
            self.m = heads

        def forward(self, x):
            out = self.m(x)
            return out["class_logits"], out["boxes"]

    return Reversed(model).eval()


@pytest.mark.parametrize("fmt,backend", [("tflite", "cpu"), ("coreml", "mil-ref")])
def test_prebuilt_tflite_and_coreml_outputs_are_matched_by_name_too(cases, tmp_path, fmt, backend):
    """The same rule as ONNX in the converters' formats: a prebuilt file's own output names (TFLite
    signature keys, Core ML description names) must be the case's or be mapped."""
    import numpy as np
    import torch

    pytest.importorskip("litert_torch" if fmt == "tflite" else "coremltools")
    first = cases("first", """
        model: {factory: 'structured_models:heads'}
        inputs: {x: {shape: [6]}}
        formats: [onnx]
        backends: [cpu]
        """)
    model, example = _reversed_heads(first.model), (torch.randn(2, 6),)
    if fmt == "tflite":
        import litert_torch

        path, own = tmp_path / "cases" / "prebuilt.tflite", ("output_0", "output_1")
        litert_torch.convert(model, example).export(str(path))
    else:
        import coremltools as ct

        path, own = tmp_path / "cases" / "prebuilt.mlpackage", ("cls", "box")
        ct.convert(torch.jit.trace(model, example), inputs=[ct.TensorType(name="x", shape=(2, 6))],
                   outputs=[ct.TensorType(name=n) for n in own], convert_to="mlprogram",
                   compute_precision=ct.precision.FLOAT32, skip_model_load=True).save(str(path))
    body = f"""
        model: {{factory: 'structured_models:heads'}}
        inputs: {{x: {{shape: [6]}}}}
        outputs: [boxes, class_logits]
        batch_sizes: [2]
        formats: [{fmt}]
        backends: [{backend}]
        export:
          {fmt}: {{artefact: {path.name}}}
        """
    unmapped = cases(f"unmapped_{fmt}", body)
    with pytest.raises(Exception, match=rf"named {own[0]}, {own[1]}; the case compares boxes, class_logits\. Map them "
                                        rf"by name with export\.{fmt}\.outputs"):
        unmapped.outputs(fmt, backend, 2)
    mapped = cases(f"mapped_{fmt}", body.replace(f"{{artefact: {path.name}}}", f"{{artefact: {path.name}, outputs: "
                                                 f"{{boxes: {own[1]}, class_logits: {own[0]}}}}}"))
    got, want = mapped.outputs(fmt, backend, 2), mapped.reference(2)
    assert list(got) == ["boxes", "class_logits"]
    for name in want:  # the reversed file, put back in the case's order by name
        assert np.abs(got[name] - want[name]).max() < 1e-4, name
