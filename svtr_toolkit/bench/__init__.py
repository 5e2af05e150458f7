"""CPU throughput benchmark: onnxruntime fp32, OpenVINO and TVM engines side by side, interleaved.

- ``flags``: the batch sweep and NAME=PATH engine values;
- ``flops``: FLOPs per image from the ONNX graph, the model's image shape;
- ``peak``: the fp32 (MLAS sgemm) and fp16 (TVM) peak probes; ``machine``: the CPU and versions;
- ``contenders``: the registry of contenders, one module per runtime (onnxruntime, OpenVINO, TVM);
- ``timing``: cells and the interleaved round loop (the kernel sweep's too); ``output``: figures, table, JSON, plot;
- ``driver``: ``run_benchmark``, which ties them together.
- ``kernels``: ``matmul_sweep``, one matmul per arithmetic (fp32, fp16, K-chunked fp16) timed alone;
- ``profile``: ``profile_vm``, an engine's time per kernel (the Relax VM's instrument hook).
"""
from .contenders import REGISTRY as CONTENDERS, Entry, Setup  # noqa: F401
from .driver import check_cells, plan_cells, run_benchmark  # noqa: F401
from .flags import DEFAULT_BATCHES, HEADLINE_BATCH, engine_batches, parse_batches, parse_engine_specs  # noqa: F401
from .flops import count_model_flops, model_image_shape, node_flops  # noqa: F401
from .kernels import format_error_table, format_throughput_table, matmul_sweep  # noqa: F401
from .machine import machine_info  # noqa: F401
from .profile import KernelTime, format_profile, profile_vm  # noqa: F401
from .output import (ORT_NAME, WRONG_BELOW, add_comparisons, cell_result, format_table, labels,  # noqa: F401
                     legend_label, peak_fraction, plot_figure, ratio, wrong_label, write_json, write_plot)
from .peak import (describe_peak, gemm_flops, matmul_model, measure_fp16_flops, measure_gemm_flops,  # noqa: F401
                   measure_peak, merge_peaks, peak_for)
from .timing import (Cell, calls_per_sample, images_per_second, interleaved_order, run_rounds,  # noqa: F401
                     sample_rounds, summarize, time_calls)
