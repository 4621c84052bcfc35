"""A user's own ONNX exporter with a plausible bug: one layer's weights pass through bfloat16 on
the way (a checkpoint round-tripped through a bf16 training run, restored for export)."""
import torch


def bf16_qkv_export(model, example_inputs, path):
    with torch.no_grad():
        qkv = model.blocks[1].attn.qkv
        qkv.weight.copy_(qkv.weight.to(torch.bfloat16).to(torch.float32))
    torch.onnx.export(model, example_inputs, str(path), dynamo=True, input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    return {"exporter": "bf16 round trip"}
