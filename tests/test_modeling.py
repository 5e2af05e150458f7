"""svtr_toolkit.prepare.modeling: PaddleOCR-identical state dict, eval semantics, TPS numerics, golden parity."""
import json
import os
import pickle

import numpy as np
import pytest

from cli_runs import REPO

CONFIG = REPO / "rec_svtr_tiny_6local_6global_stn_en.yml"

os.environ.setdefault("GLOG_minloglevel", "2")
paddle = pytest.importorskip("paddle")

from svtr_toolkit.prepare import modeling  # noqa: E402
from svtr_toolkit.config import load_config  # noqa: E402
from svtr_toolkit.errors import ToolkitError  # noqa: E402
from shared_data import golden  # noqa: E402


@pytest.fixture(scope="module")
def cfg():
    return load_config(str(CONFIG))


@pytest.fixture(scope="module")
def model(cfg):
    return modeling.build_model(cfg, seed=0)


@pytest.fixture(scope="module")
def golden_model(cfg):
    """The model with the golden seeded weights (a fresh instance: other tests keep theirs)."""
    params = pickle.loads(golden("svtr_tiny_seeded.pdparams").read_bytes())
    m = modeling.build_model(cfg, seed=0)
    m.set_state_dict({name: params[name] for name, _ in modeling.state_dict_spec(m)})
    return m


def test_state_dict_size_from_yml(model):
    """Shared-independent: PaddleOCR's SVTR-Tiny has 214 tensors, 6,025,805 elements."""
    spec = modeling.state_dict_spec(model)
    assert len(spec) == 214
    assert sum(int(np.prod(s)) for _, s in spec) == 6_025_805
    by_part = {}
    for name, shape in spec:
        by_part[name.split(".")[0]] = by_part.get(name.split(".")[0], 0) + int(np.prod(shape))
    assert by_part == {"transform": 1_857_768, "backbone": 4_160_896, "head": 7_141}
    # buffers that are constants of the graph stay out of the state dict, as in PaddleOCR
    assert not any("mask" in n or "inverse" in n or "repr" in n for n, _ in spec)


def test_state_dict_equals_paddleocr_golden_list(model):
    want = json.loads(golden("svtr_tiny_state_dict.json").read_text())
    assert want["num_tensors"] == 214
    got = [{"name": n, "shape": list(s), "dtype": "float32"} for n, s in modeling.state_dict_spec(model)]
    assert [t["name"] for t in got] == [t["name"] for t in want["tensors"]]  # same order too
    assert got == want["tensors"]
    assert {str(v.dtype) for v in model.state_dict().values()} == {"paddle.float32"}


def test_eval_semantics(model):
    assert not model.training
    assert model.backbone.dropout.mode == "downscale_in_infer" and model.backbone.dropout.p == pytest.approx(0.1)
    x = paddle.to_tensor(np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 256)).astype(np.float32))
    with paddle.no_grad():
        out = model(x).numpy()
        again = model(x).numpy()
        # the last dropout multiplies by 1 - p at inference
        feats = model.backbone.hardswish(model.backbone.last_conv(paddle.ones([1, 256, 1, 25])))
        assert np.allclose(model.backbone.dropout(feats).numpy(), 0.9 * feats.numpy())
    assert out.shape == (2, 25, 37)
    assert np.allclose(out.sum(-1), 1.0, atol=1e-5)  # softmax over the classes at inference
    assert np.array_equal(out, again)  # deterministic: no dropout / drop-path at eval


def test_local_attention_mask():
    mask = modeling.local_attention_mask([8, 25], [7, 11])
    assert mask.shape == (200, 200) and mask.dtype == np.float32
    allowed = mask == 0
    assert set(np.unique(mask)) == {0.0, -np.inf}
    assert np.array_equal(allowed, allowed.T) and allowed.diagonal().all()
    # an interior query sees its full 7x11 window, a corner one the clipped 4x6
    assert allowed[4 * 25 + 12].sum() == 7 * 11
    assert allowed[0].sum() == 4 * 6
    # query (0,0) sees rows 0..3 and columns 0..5 only
    seen = {(k // 25, k % 25) for k in np.flatnonzero(allowed[0])}
    assert seen == {(r, c) for r in range(4) for c in range(6)}


def test_svtr_masks_only_on_local_blocks(model):
    kinds = [blk.mixer.mixer for stage in (model.backbone.blocks1, model.backbone.blocks2, model.backbone.blocks3)
             for blk in stage]
    assert kinds == ["Local"] * 6 + ["Global"] * 6
    assert model.backbone.blocks2[0].mixer.mask.shape == [1, 1, 100, 100]  # 4x25 after the first merge


def test_tps_identity_when_source_equals_target():
    """Source points at the target points make the TPS the identity map of the unit square."""
    tps = modeling.TPSSpatialTransformer([32, 100], 20, [0.05, 0.05])
    target = modeling._margin_control_points(20, 0.05, 0.05).astype(np.float32)
    img = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 100)).astype(np.float32)
    with paddle.no_grad():
        out = tps(paddle.to_tensor(img), paddle.to_tensor(target[None])).numpy()
    assert np.abs(out - img).max() < 1e-3


def test_tps_grid_is_a_plain_sequential_float32_sum():
    """The grid equals separate float32 multiply/add in a fixed order, bit for bit (no FMA,
    no BLAS blocking), which is what makes it identical on Paddle, onnxruntime and TVM."""
    tps = modeling.TPSSpatialTransformer([32, 100], 20, [0.05, 0.05])
    inv = tps.inverse_columns.numpy()[:, :, 0]  # [N, N+3]: column j of K^-1
    rep = tps.repr_columns.numpy()[:, :, 0]  # [N+3, HW]
    q = np.random.default_rng(3).uniform(0, 1, (2, 20, 2)).astype(np.float32)
    grids = []
    import paddle.nn.functional as F

    orig = F.grid_sample
    try:
        modeling.F.grid_sample = lambda image, grid, **kw: grid
        with paddle.no_grad():
            got = tps(paddle.zeros([2, 3, 64, 256]), paddle.to_tensor(q)).numpy()
    finally:
        modeling.F.grid_sample = orig
    for b in range(2):
        coef = inv[0][:, None] * q[b, 0]
        for j in range(1, 20):
            coef = coef + inv[j][:, None] * q[b, j]
        grid = rep[0][:, None] * coef[0]
        for k in range(1, 23):
            grid = grid + rep[k][:, None] * coef[k]
        grids.append(np.clip(grid, np.float32(0), np.float32(1)) * np.float32(2) - np.float32(1))
    assert np.array_equal(got.reshape(2, -1, 2), np.stack(grids))


def test_non_svtr_config_is_rejected(tmp_path):
    text = CONFIG.read_text().replace("name: SVTRNet", "name: MobileNetV1Enhance")
    (tmp_path / "other.yml").write_text(text)
    with pytest.raises(ToolkitError, match="Backbone is 'MobileNetV1Enhance', expected 'SVTRNet'"):
        modeling.build_model(load_config(str(tmp_path / "other.yml")))


def test_unsupported_svtr_option_is_rejected(tmp_path):
    text = CONFIG.read_text().replace("patch_merging: 'Conv'", "patch_merging: 'Pool'")
    (tmp_path / "pool.yml").write_text(text)
    with pytest.raises(ToolkitError, match="patch_merging"):
        modeling.build_model(load_config(str(tmp_path / "pool.yml")))


def test_paddle_model_matches_paddleocr_golden(golden_model):
    """(a) The Paddle model itself, before any ONNX step, against PaddleOCR's output."""
    io = np.load(golden("svtr_tiny_seeded_io.npz"))
    with paddle.no_grad():
        out = golden_model(paddle.to_tensor(io["x"])).numpy()
    diff = np.abs(out - io["probs"])
    print(f"Paddle vs golden: max abs diff {diff.max():.3g}")
    assert diff.max() < 1e-4, f"per row: {diff.reshape(len(out), -1).max(1)}"
    assert np.array_equal(out.argmax(-1), io["probs"].argmax(-1))
