"""Test data made on the spot: small ONNX graphs with the operators SVTR's export contains (fast
engine tests), LMDBs, image folders with a label file, and a PP-OCRv4-like config."""
import os
from pathlib import Path

import cv2
import lmdb
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from cli_runs import REPO
from svtr_toolkit.config import DEFAULT_CHARACTERS

SHAPE = (2, 3, 8, 16)  # the tiny recogniser's static input


def ort_run(model_or_path, x):
    """onnxruntime on a model file or ModelProto."""
    import onnxruntime as ort

    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def tiny_recogniser(path, with_grid_sample=True, seed=0, batch="N"):
    """x [N,3,8,16] -> (GridSample rectifier) -> conv -> clamps -> [N,4,5] softmax.

    Dynamic batch like paddle2onnx's output; the Resize carries empty roi/scales inputs
    like paddle2onnx writes them.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    if with_grid_sample:
        inits += [_init("g_w", rng.normal(0, 0.3, (2, 3, 3, 3))), _init("g_b", np.zeros(2))]
        nodes += [
            helper.make_node("Conv", ["x", "g_w", "g_b"], ["g_conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["g_conv"], ["g_tanh"]),
            helper.make_node("Transpose", ["g_tanh"], ["grid"], perm=[0, 2, 3, 1]),
            helper.make_node("GridSample", ["x", "grid"], ["rectified"], align_corners=1),
        ]
        current = "rectified"
    inits += [
        _init("w1", rng.normal(0, 0.5, (4, 3, 3, 3))), _init("b1", rng.normal(0, 0.1, 4)),
        _init("lo", 0.0), _init("hi", 6.0),
        _init("roi", np.zeros(0)), _init("scales", np.zeros(0)),
        numpy_helper.from_array(np.array([0, 4, 20], dtype=np.int64), "seq_shape"),
        _init("w2", rng.normal(0, 0.5, (20, 5))),
    ]
    nodes += [
        helper.make_node("Conv", [current, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["clip"]),
        helper.make_node("HardSwish", ["clip"], ["hsw"]),
        helper.make_node("HardSigmoid", ["hsw"], ["hsg"], alpha=0.25, beta=0.4),
        helper.make_node("Shape", ["hsg"], ["shape"]),
        helper.make_node("Slice", ["shape", "s0", "s1"], ["batch_dim"]),
        helper.make_node("Concat", ["batch_dim", "tail"], ["sizes"], axis=0),
        helper.make_node("Resize", ["hsg", "roi", "scales", "sizes"], ["small"], mode="linear"),
        helper.make_node("Reshape", ["small", "seq_shape"], ["seq"]),
        helper.make_node("MatMul", ["seq", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits += [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "s1"),
        numpy_helper.from_array(np.array([4, 4, 5], dtype=np.int64), "tail"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 4, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_fake_onnx(path, text="hotel", batch="N"):
    """x [batch,3,64,256] -> softmax probs [batch,25,37] decoding to ``text`` (repeats + blanks inside)."""
    seq = []
    for ch in text:
        seq += [DEFAULT_CHARACTERS.index(ch) + 1] * 2 + [0]
    seq += [0] * (25 - len(seq))
    logits = np.full((25, 37), -4.0, np.float32)
    logits[np.arange(25), seq] = 4.0
    const = lambda name, arr: helper.make_tensor(name, TensorProto.FLOAT if arr.dtype == np.float32
                                                 else TensorProto.INT64, arr.shape, arr.flatten().tolist())
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]),
         helper.make_node("Squeeze", ["s", "sq_axes"], ["q"]),
         helper.make_node("Mul", ["q", "zero"], ["z"]),
         helper.make_node("Add", ["z", "logits"], ["l"]),
         helper.make_node("Softmax", ["l"], ["probs"], axis=2)],
        "fake_svtr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 64, 256])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 25, 37])],
        [const("starts", np.array([0, 0, 0], np.int64)), const("ends", np.array([1, 25, 37], np.int64)),
         const("axes", np.array([1, 2, 3], np.int64)), const("sq_axes", np.array([1], np.int64)),
         const("zero", np.zeros((), np.float32)), const("logits", logits)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_lmdb(path, labels):
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26)
    rng = np.random.default_rng(0)
    with env.begin(write=True) as txn:
        for i, label in enumerate(labels, 1):
            img = rng.integers(0, 256, (20 + i, 60 + 7 * i, 3), dtype=np.uint8)
            txn.put(b"image-%09d" % i, cv2.imencode(".jpg", img)[1].tobytes())
            txn.put(b"label-%09d" % i, label.encode())
        txn.put(b"num-samples", str(len(labels)).encode())
    env.close()


def write_images(folder, labels):
    """One small random PNG per label in ``folder`` and a ``gt.txt`` (tab-separated) naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, label in enumerate(labels):
        ok, buf = cv2.imencode(".png", rng.integers(0, 255, (12, 30, 3), dtype=np.uint8))
        (folder / f"w{i}.png").write_bytes(buf.tobytes())
        lines.append(f"w{i}.png\t{label}")
    (folder / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "gt.txt"


def ppocr_like_config(tmp_path) -> Path:
    """PP-OCRv4's label rules (its own dictionary with capitals, punctuation and a space, case kept,
    is_filter) at the fake model's shape and class count (35 characters + space + blank = 37): the
    fake model's letters keep their class, the digits' classes are capitals and punctuation."""
    (tmp_path / "dict.txt").write_text("\n".join("DORHGT!&$%abcdefghijklmnopqrstuvwxy") + "\n")
    cfg = yaml.safe_load((REPO / "configs" / "ch_PP-OCRv4_rec_eval.yml").read_text())
    cfg["Global"]["character_dict_path"] = str(tmp_path / "dict.txt")
    cfg["Eval"]["dataset"]["transforms"][2]["RecResizeImg"]["image_shape"] = [3, 64, 256]
    (tmp_path / "rec.yml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "rec.yml"
