"""SVTR-Tiny (STN_ON + SVTRNet + reshape neck + CTCHead) in paddle.nn, built from a yml.

This is the toolkit's own implementation of the PaddleOCR recogniser described by
``rec_svtr_tiny_6local_6global_stn_en.yml``. It exists because no pip package ships
PaddleOCR's ``ppocr/modeling``. What must hold:

* parameter and buffer names, shapes and order equal PaddleOCR's, so a
  ``best_accuracy.pdparams`` loads without renaming (214 tensors, 6,025,805 elements);
* eval-mode semantics equal PaddleOCR's: BatchNorm uses running statistics, ordinary
  dropouts are identities, the backbone's last dropout is ``downscale_in_infer`` (it
  multiplies by ``1 - last_drop`` at inference), the CTC head applies softmax over the
  classes only when not training;
* the STN resizes the image to ``tps_inputsize`` (bilinear, align_corners=True), predicts
  the control points, and the TPS transformer samples a ``tps_outputsize`` image with
  ``grid_sample`` (bilinear, zero padding, align_corners=True) on a grid clipped to [0, 1].

The TPS constants (kernel inverse, target-grid representation) depend only on the fixed
target control points; they are computed once at construction with PaddleOCR's float32
numerics and travel as graph constants. The per-image grid is then built from explicit
multiply/add chains so that it is bit-identical on every runtime (see
``TPSSpatialTransformer``): this recogniser is sensitive enough to the last bits of the
sampling grid that a BLAS's choice of FMA kernels shows up in the output probabilities.

Non-learned constants (TPS matrix, attention masks) are non-persistable buffers: they
travel into the exported graph but not into the state dict, as in PaddleOCR.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..errors import ToolkitError

# PaddleOCR's defaults for the keys the SVTR-Tiny yml leaves out.
SVTR_DEFAULTS = dict(
    img_size=[32, 100],
    in_channels=3,
    embed_dim=[64, 128, 256],
    depth=[3, 6, 3],
    num_heads=[2, 4, 8],
    mixer=["Local"] * 6 + ["Global"] * 6,
    local_mixer=[[7, 11], [7, 11], [7, 11]],
    patch_merging="Conv",
    mlp_ratio=4,
    qkv_bias=True,
    qk_scale=None,
    last_drop=0.1,
    epsilon=1e-6,
    out_channels=192,
    out_char_num=25,
    last_stage=True,
    sub_num=2,
    prenorm=True,
)

# Initialisers used only for an untrained model (they mirror PaddleOCR's choice so that
# a seeded model behaves like a freshly initialised PaddleOCR one: in particular the STN
# starts as an almost-identity warp because stn_fc2's weight is zero).
_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


# --------------------------------------------------------------------------------------
# STN_ON: localisation network + thin-plate-spline spatial transformer
# --------------------------------------------------------------------------------------
def _margin_control_points(num_points: int, margin_x: float, margin_y: float) -> np.ndarray:
    """Control points on the top and bottom edge of the unit square, (x, y), float64."""
    per_side = num_points // 2
    xs = np.linspace(margin_x, 1.0 - margin_x, per_side)
    top = np.stack([xs, np.full(per_side, margin_y)], axis=1)
    bottom = np.stack([xs, np.full(per_side, 1.0 - margin_y)], axis=1)
    return np.concatenate([top, bottom], axis=0)


def _tps_radial(points, ctrl):
    """U(r) = r^2 log r = 0.5 * d * log(d) with d = r^2, and U(0) = 0 (paddle tensors).

    Evaluated with paddle ops in PaddleOCR's order so the float32 rounding is the same.
    """
    diff = points.unsqueeze(1) - ctrl.unsqueeze(0)
    sq = diff * diff
    d = sq[:, :, 0] + sq[:, :, 1]
    out = 0.5 * d * paddle.log(d)
    return paddle.where(paddle.isnan(out), paddle.zeros_like(out), out)  # 0 * log(0)


def tps_constants(out_hw, num_points: int, margins):
    """(inverse kernel [N+3, N+3], target representation [H*W, N+3]), float32 numpy.

    The TPS maps the fixed target control points P (margins inside the output image)
    onto the predicted source points Q. Its coefficients are K^-1 [Q; 0] with
    K = [[U(P,P), 1, P], [1^T, 0, 0], [P^T, 0, 0]]; the source position of output pixel
    t is [U(t,P), 1, t] @ K^-1 @ [Q; 0].

    Numerics follow PaddleOCR exactly, on purpose: U(P,P) is evaluated in float64 and
    rounded, K is assembled in float32 and inverted in float32 by ``paddle.inverse`` once,
    here at construction (it is a constant of the graph, not an in-graph op); output pixel
    coordinates are y * float32(1/(H-1)) and x * float32(1/(W-1)). K has a condition
    number of about 1.3e3, so a float64 inverse differs from PaddleOCR's by ~5e-4, and the
    recogniser is sensitive enough to sub-pixel shifts of the sampling grid that this
    alone moves output probabilities by up to ~5e-2 on peaky weights. Folding K^-1 into
    the target representation (one matmul instead of two) would also change rounding.
    """
    h, w = (int(v) for v in out_hw)
    n = int(num_points)
    with paddle.no_grad():
        target64 = paddle.to_tensor(_margin_control_points(n, *margins))  # float64
        kernel = paddle.zeros([n + 3, n + 3], dtype="float32")
        kernel[:n, :n] = paddle.cast(_tps_radial(target64, target64), "float32")
        kernel[:n, n] = 1.0
        kernel[n, :n] = 1.0
        target = paddle.cast(target64, "float32")
        kernel[:n, n + 1:] = target
        kernel[n + 1:, :n] = target.transpose([1, 0])
        inverse = paddle.inverse(kernel)
        # output pixel (y, x) in row-major order; int64 / int is a float32 scale in paddle
        ys = paddle.to_tensor(np.repeat(np.arange(h, dtype=np.int64), w).reshape(-1, 1)) / (h - 1)
        xs = paddle.to_tensor(np.tile(np.arange(w, dtype=np.int64), h).reshape(-1, 1)) / (w - 1)
        coords = paddle.concat([xs, ys], axis=1)  # (x, y)
        rep = paddle.concat([_tps_radial(coords, target), paddle.ones([h * w, 1], dtype="float32"), coords], axis=1)
    return inverse.numpy(), rep.numpy()


class TPSSpatialTransformer(nn.Layer):
    """Sampling grid from the predicted control points, then grid_sample.

    grid = R @ (K^-1 @ [Q; 0]) is written out as explicit float32 multiply-then-add
    chains in a fixed order (j = 0..N-1, then k = 0..N+2) instead of two matmuls.
    The first product cancels heavily (|K^-1| reaches ~87 while the result is in [0, 1]),
    so the grid's last bits depend on how a BLAS orders and fuses the sums: MKL's AVX-512
    (FMA) path and its plain path differ by up to ~1e-5 in the grid, and this network
    turns that into output differences up to 3e-3 (2e-2 on MKL's AVX2 path). Separate,
    exactly rounded Mul and Add ops give the same grid on every runtime (Paddle,
    onnxruntime, TVM without fp-contraction), equal to a plain sequential float32 dot
    product, which is what PaddleOCR computes with MKL in its compatible mode. The zero
    padding rows of [Q; 0] contribute exact zeros, so they are left out.
    """

    def __init__(self, output_image_size, num_control_points, margins):
        super().__init__()
        self.target_height, self.target_width = (int(v) for v in output_image_size)
        self.num_control_points = int(num_control_points)
        inverse, rep = tps_constants((self.target_height, self.target_width), self.num_control_points, margins)
        n = self.num_control_points
        # column j of K^-1 as [N+3, 1] and column k of R as [HW, 1], stacked for indexing
        self.register_buffer("inverse_columns", paddle.to_tensor(np.ascontiguousarray(inverse[:, :n].T[:, :, None])),
                             persistable=False)
        self.register_buffer("repr_columns", paddle.to_tensor(np.ascontiguousarray(rep.T[:, :, None])),
                             persistable=False)

    def forward(self, image, source_control_points):
        q = source_control_points  # [B, N, 2]
        coef = self.inverse_columns[0] * q[:, 0:1, :]  # [N+3, 1] * [B, 1, 2] -> [B, N+3, 2]
        for j in range(1, self.num_control_points):
            coef = coef + self.inverse_columns[j] * q[:, j:j + 1, :]
        grid = self.repr_columns[0] * coef[:, 0:1, :]  # [HW, 1] * [B, 1, 2] -> [B, HW, 2]
        for k in range(1, self.num_control_points + 3):
            grid = grid + self.repr_columns[k] * coef[:, k:k + 1, :]
        grid = grid.reshape([-1, self.target_height, self.target_width, 2])  # (x, y) in [0, 1]
        grid = paddle.clip(grid, 0.0, 1.0)  # predicted points may leave the image
        grid = 2.0 * grid - 1.0  # grid_sample wants [-1, 1]
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _conv3x3_bn_relu(cin, cout):
    conv = nn.Conv2D(
        cin, cout, 3, stride=1, padding=1,
        weight_attr=nn.initializer.Normal(0.0, math.sqrt(2.0 / (9 * cout))),
        bias_attr=_zeros,
    )
    return nn.Sequential(conv, nn.BatchNorm2D(cout), nn.ReLU())


class STNHead(nn.Layer):
    """Localisation network: 6 conv blocks (5 max-pools between), fc1+bn+relu, fc2 -> points."""

    def __init__(self, in_channels, num_ctrlpoints, activation="none"):
        super().__init__()
        if activation not in ("none", "sigmoid"):
            raise ToolkitError(f"STN_ON.stn_activation must be 'none' or 'sigmoid', got {activation!r}")
        self.num_ctrlpoints = num_ctrlpoints
        self.activation = activation
        widths = [in_channels, 32, 64, 128, 256, 256, 256]
        layers = []
        for i in range(6):
            if i:
                layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
            layers.append(_conv3x3_bn_relu(widths[i], widths[i + 1]))
        # Sequential indices 0, 2, 4, 6, 8, 10 are the conv blocks (PaddleOCR's names).
        self.stn_convnet = nn.Sequential(*layers)
        self.stn_fc1 = nn.Sequential(
            nn.Linear(2 * 256, 512, weight_attr=nn.initializer.Normal(0.0, 0.001), bias_attr=_zeros),
            nn.BatchNorm1D(512),
            nn.ReLU(),
        )
        start = _margin_control_points(num_ctrlpoints, 0.01, 0.01).astype(np.float32)
        if activation == "sigmoid":
            start = -np.log(1.0 / start - 1.0)
        self.stn_fc2 = nn.Linear(
            512, num_ctrlpoints * 2,
            weight_attr=_zeros,
            bias_attr=nn.initializer.Assign(start.reshape(-1)),
        )

    def forward(self, x):
        x = self.stn_convnet(x)
        x = x.flatten(1)
        feat = self.stn_fc1(x)
        points = self.stn_fc2(0.1 * feat)
        if self.activation == "sigmoid":
            points = F.sigmoid(points)
        return points.reshape([-1, self.num_ctrlpoints, 2])


class STN_ON(nn.Layer):
    def __init__(self, in_channels, tps_inputsize, tps_outputsize, num_control_points, tps_margins,
                 stn_activation="none"):
        super().__init__()
        self.tps_inputsize = [int(v) for v in tps_inputsize]
        self.tps = TPSSpatialTransformer(tps_outputsize, num_control_points, tps_margins)
        self.stn_head = STNHead(in_channels, num_control_points, stn_activation)
        self.out_channels = in_channels

    def forward(self, image):
        small = F.interpolate(image, size=self.tps_inputsize, mode="bilinear", align_corners=True)
        points = self.stn_head(small)
        return self.tps(image, points)


# --------------------------------------------------------------------------------------
# SVTRNet
# --------------------------------------------------------------------------------------
class ConvBNLayer(nn.Layer):
    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel_size, stride=stride, padding=padding,
                              weight_attr=nn.initializer.KaimingUniform())
        self.norm = nn.BatchNorm2D(cout)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class PatchEmbed(nn.Layer):
    """Two stride-2 conv+BN+GELU layers: [B,3,H,W] -> [B, H/4*W/4, C]."""

    def __init__(self, img_size, in_channels, embed_dim, sub_num):
        super().__init__()
        if sub_num != 2:
            raise ToolkitError(f"SVTRNet.sub_num {sub_num} is not supported (only 2)")
        self.img_size = list(img_size)
        self.num_patches = (img_size[0] // 4) * (img_size[1] // 4)
        self.proj = nn.Sequential(
            ConvBNLayer(in_channels, embed_dim // 2, 3, 2, 1),
            ConvBNLayer(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x):
        return self.proj(x).flatten(2).transpose([0, 2, 1])


class Mlp(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def local_attention_mask(hw, window) -> np.ndarray:
    """[H*W, H*W] float32: 0 where the key lies in the query's window, -inf elsewhere.

    The window is centred on the query (kh//2 rows and kw//2 columns either side) and
    clipped at the feature-map border, exactly like PaddleOCR's padded-mask-then-crop.
    """
    h, w = hw
    kh, kw = window
    if kh % 2 == 0 or kw % 2 == 0:
        raise ToolkitError(f"SVTRNet.local_mixer window must be odd, got {window}")
    rows = np.arange(h * w) // w
    cols = np.arange(h * w) % w
    near = (np.abs(rows[:, None] - rows[None, :]) <= kh // 2) & (np.abs(cols[:, None] - cols[None, :]) <= kw // 2)
    return np.where(near, 0.0, -np.inf).astype(np.float32)


class Attention(nn.Layer):
    def __init__(self, dim, num_heads, mixer, hw, local_k, qkv_bias, qk_scale):
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias_attr=None if qkv_bias else False)
        self.proj = nn.Linear(dim, dim)
        self.mixer = mixer
        if mixer == "Local":
            mask = local_attention_mask(hw, local_k)[None, None]
            self.register_buffer("mask", paddle.to_tensor(mask), persistable=False)

    def forward(self, x):
        qkv = self.qkv(x).reshape([0, -1, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = paddle.matmul(q, k, transpose_y=True)
        if self.mixer == "Local":
            attn = attn + self.mask
        attn = F.softmax(attn, axis=-1)
        x = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([0, -1, self.dim])
        return self.proj(x)


class Block(nn.Layer):
    def __init__(self, dim, num_heads, mixer, local_mixer, hw, mlp_ratio, qkv_bias, qk_scale, epsilon, prenorm):
        super().__init__()
        if mixer not in ("Local", "Global"):
            raise ToolkitError(f"SVTRNet mixer {mixer!r} is not supported (Local or Global)")
        self.norm1 = nn.LayerNorm(dim, epsilon=epsilon)
        self.mixer = Attention(dim, num_heads, mixer, hw, local_mixer, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim, epsilon=epsilon)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.prenorm = prenorm

    def forward(self, x):
        # drop_path is the identity at inference
        if self.prenorm:
            x = self.norm1(x + self.mixer(x))
            x = self.norm2(x + self.mlp(x))
        else:
            x = x + self.mixer(self.norm1(x))
            x = x + self.mlp(self.norm2(x))
        return x


class SubSample(nn.Layer):
    """Conv patch merging: 3x3 conv with stride [2, 1] then LayerNorm (default epsilon)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, 3, stride=[2, 1], padding=1,
                              weight_attr=nn.initializer.KaimingNormal())
        self.norm = nn.LayerNorm(cout)

    def forward(self, x):
        return self.norm(self.conv(x).flatten(2).transpose([0, 2, 1]))


class SVTRNet(nn.Layer):
    def __init__(self, **kwargs):
        super().__init__()
        unknown = sorted(set(kwargs) - set(SVTR_DEFAULTS) - {"drop_rate", "attn_drop_rate", "drop_path_rate",
                                                             "norm_layer", "sub_norm", "block_unit", "act",
                                                             "use_lenhead"})
        if unknown:
            raise ToolkitError(f"SVTRNet: unsupported option(s) {', '.join(unknown)}")
        for key, want in (("patch_merging", "Conv"), ("last_stage", True), ("use_lenhead", False),
                          ("block_unit", "Block"), ("act", "nn.GELU"), ("norm_layer", "nn.LayerNorm"),
                          ("sub_norm", "nn.LayerNorm")):
            if key in kwargs and kwargs[key] != want:
                raise ToolkitError(f"SVTRNet.{key}={kwargs[key]!r} is not supported (only {want!r})")
        o = {**SVTR_DEFAULTS, **{k: v for k, v in kwargs.items() if k in SVTR_DEFAULTS}}
        img_size, dims, depth, heads = o["img_size"], o["embed_dim"], o["depth"], o["num_heads"]
        if len(o["mixer"]) != sum(depth):
            raise ToolkitError(f"SVTRNet: {len(o['mixer'])} mixers for depth {depth}")
        self.embed_dim = dims
        self.out_channels = o["out_channels"]
        self.prenorm = o["prenorm"]
        self.patch_embed = PatchEmbed(img_size, o["in_channels"], dims[0], o["sub_num"])
        self.HW = [img_size[0] // 4, img_size[1] // 4]
        self.pos_embed = self.create_parameter(shape=[1, self.patch_embed.num_patches, dims[0]],
                                               default_initializer=_zeros)
        self.add_parameter("pos_embed", self.pos_embed)

        def stage(i, hw):
            start = sum(depth[:i])
            return nn.LayerList([
                Block(dims[i], heads[i], o["mixer"][start + j], o["local_mixer"][i], hw, o["mlp_ratio"],
                      o["qkv_bias"], o["qk_scale"], o["epsilon"], o["prenorm"])
                for j in range(depth[i])
            ])

        self.blocks1 = stage(0, self.HW)
        self.sub_sample1 = SubSample(dims[0], dims[1])
        self.blocks2 = stage(1, [self.HW[0] // 2, self.HW[1]])
        self.sub_sample2 = SubSample(dims[1], dims[2])
        self.blocks3 = stage(2, [self.HW[0] // 4, self.HW[1]])
        self.avg_pool = nn.AdaptiveAvgPool2D([1, o["out_char_num"]])
        self.last_conv = nn.Conv2D(dims[2], self.out_channels, 1, stride=1, padding=0, bias_attr=False)
        self.hardswish = nn.Hardswish()
        # downscale_in_infer: identity while training, times (1 - p) at inference
        self.dropout = nn.Dropout(p=o["last_drop"], mode="downscale_in_infer")
        if not self.prenorm:
            self.norm = nn.LayerNorm(dims[-1], epsilon=o["epsilon"])
        _trunc_normal(self.pos_embed)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            _trunc_normal(m.weight)
            if m.bias is not None:
                _zeros(m.bias)
        elif isinstance(m, nn.LayerNorm):
            _zeros(m.bias)
            _ones(m.weight)

    def forward(self, x):
        h, w = self.HW
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks1:
            x = blk(x)
        x = self.sub_sample1(x.transpose([0, 2, 1]).reshape([0, self.embed_dim[0], h, w]))
        for blk in self.blocks2:
            x = blk(x)
        x = self.sub_sample2(x.transpose([0, 2, 1]).reshape([0, self.embed_dim[1], h // 2, w]))
        for blk in self.blocks3:
            x = blk(x)
        if not self.prenorm:
            x = self.norm(x)
        x = self.avg_pool(x.transpose([0, 2, 1]).reshape([0, self.embed_dim[2], h // 4, w]))
        x = self.hardswish(self.last_conv(x))
        return self.dropout(x)


# --------------------------------------------------------------------------------------
# Neck and head
# --------------------------------------------------------------------------------------
class SequenceEncoder(nn.Layer):
    """encoder_type 'reshape' (Im2Seq): [B, C, 1, W] -> [B, W, C]."""

    def __init__(self, in_channels, encoder_type="reshape", **kwargs):
        super().__init__()
        if encoder_type != "reshape":
            raise ToolkitError(f"SequenceEncoder.encoder_type {encoder_type!r} is not supported (only 'reshape')")
        self.out_channels = in_channels

    def forward(self, x):
        return x.squeeze(axis=2).transpose([0, 2, 1])


class CTCHead(nn.Layer):
    def __init__(self, in_channels, out_channels, mid_channels=None, **kwargs):
        super().__init__()
        if mid_channels is not None:
            raise ToolkitError("CTCHead.mid_channels is not supported")
        bound = 1.0 / math.sqrt(in_channels)
        init = nn.initializer.Uniform(-bound, bound)
        self.fc = nn.Linear(in_channels, out_channels, weight_attr=init, bias_attr=init)

    def forward(self, x):
        logits = self.fc(x)
        if self.training:
            return logits
        return F.softmax(logits, axis=2)  # inference output: probabilities over the classes


class SVTRRecModel(nn.Layer):
    """[B, 3, 64, 256] normalised image -> [B, out_char_num, num_classes] probabilities."""

    def __init__(self, architecture: dict, num_classes: int, in_channels: int = 3):
        super().__init__()
        t = dict(architecture["Transform"])
        b = dict(architecture["Backbone"])
        n = dict(architecture["Neck"])
        hd = dict(architecture["Head"])
        for part in (t, b, n, hd):
            part.pop("name", None)
        try:
            self.transform = STN_ON(in_channels=in_channels, **t)
        except TypeError as exc:
            raise ToolkitError(f"Architecture.Transform (STN_ON): {exc}")
        b.setdefault("in_channels", in_channels)
        self.backbone = SVTRNet(**b)
        self.neck = SequenceEncoder(self.backbone.out_channels, **n)
        self.head = CTCHead(self.neck.out_channels, num_classes, **hd)

    def forward(self, x):
        return self.head(self.neck(self.backbone(self.transform(x))))


def num_classes_for(cfg) -> int:
    """CTC classes: the dictionary plus the blank (class 0)."""
    return len(cfg.characters()) + 1


def build_model(cfg, seed: int | None = None) -> SVTRRecModel:
    """The eval-mode network for a checked SVTR config (``config.require_svtr_stn_ctc``).

    ``seed`` makes the random initialisation reproducible (used for untrained exports).
    """
    from ..config import require_svtr_stn_ctc

    require_svtr_stn_ctc(cfg)
    if seed is not None:
        paddle.seed(seed)
        np.random.seed(seed)
    model = SVTRRecModel(cfg.architecture, num_classes_for(cfg))
    model.eval()
    return model


def state_dict_spec(model: nn.Layer) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor the checkpoint must provide, in state-dict order."""
    return [(name, tuple(int(d) for d in t.shape)) for name, t in model.state_dict().items()]
