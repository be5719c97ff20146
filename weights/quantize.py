"""int8 weights for the MiniLM graph that weights/minilm.py writes (offline, at build time).

One MiniLM run reads all its weights and is memory-bound on a shared machine, so the weights go int8:

    most weight MatMuls   onnxruntime's dynamic quantisation: MatMulInteger, one int8 scale per output
                          column, the activations quantised to uint8 per run (one scale per tensor)
    ``BLOCKWISE`` ones    the feed-forward output projections, whose input is GELU's output with outliers
                          one activation scale per tensor cannot carry: MatMulNBits (onnxruntime's
                          com.microsoft op), 8-bit weights with one scale per 32 inputs, the activations
                          quantised per block of 32 as well (accuracy_level 4)

The vectors stay within cosine 0.99 of the float32 graph's (docs/benchmarks.md, "Response cache").
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BLOCKWISE = (".out.wT",)  # initializer names (``<layer>.out.wT``: [in, out]) quantised per block
BLOCK = 32
WEIGHTS = "int8: MatMulInteger per-channel; feed-forward outputs MatMulNBits 8-bit, blocks of 32"


def quantize_weights(model: Any) -> bytes:
    """``model`` (float32, weight MatMuls with ``*.wT`` initializers) with int8 weights, serialised."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1].endswith(BLOCKWISE)]
    with tempfile.TemporaryDirectory(prefix="minilm-quant-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        root = logging.getLogger()  # quantize_dynamic warns on the root logger ("consider pre-processing")
        was, root.disabled = root.disabled, True
        try:
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=keep,
            )
        finally:
            root.disabled = was
        quantized = onnx.load(str(dst))
    _blockwise(quantized)
    return bytes(quantized.SerializeToString())


def _blockwise(model: Any) -> None:
    """Replace the MatMuls of ``BLOCKWISE`` initializers with MatMulNBits (8 bits, symmetric, in place)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        name = node.input[1] if node.op_type == "MatMul" else ""
        if not (name in inits and name.endswith(BLOCKWISE)):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[name]).T.astype(np.float32)  # [out, in]: MatMulNBits' layout
        n, k = w.shape
        blocks = w.reshape(n, k // BLOCK, BLOCK)
        scale = np.abs(blocks).max(axis=-1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(blocks / scale[..., None]), -128, 127).astype(np.int16) + 128  # zero point 128
        graph.initializer.remove(inits[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(q.astype(np.uint8), f"{name}.q8"),
                numpy_helper.from_array(scale.reshape(-1), f"{name}.s"),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{name}.q8", f"{name}.s"],
                list(node.output),
                name=node.name,
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=BLOCK,
                accuracy_level=4,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
