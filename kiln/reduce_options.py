"""The ``kiln compile`` options for int8 / fp16 / bf16 and pruning, ready to attach.

    @cli.command("compile")
    ...
    @reduce_options
    def compile_cmd(model, backend, target, precision, ..., **reduce):
        if wants_reduction(precision, reduce):
            session, result = open_reduced(model, backend, target, precision, reduce, threads)
            for line in result.lines():
                console.print(line)

Options: ``--calibration DATA|random:N``, ``--calibration-method minmax|percentile|entropy|mse``,
``--quantization auto|static|dynamic``, ``--exclude NAME_OR_OP`` (repeatable or comma
separated), ``--max-accuracy-drop X`` (fraction, 0.01 = one point), ``--prune
magnitude:S|channels:R``, ``--speed-gate`` (time int8 regions on the backend and keep only the
faster ones), ``--eval DATA`` (a separate evaluation set for the accuracy report).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import click

from kiln.errors import InputError

_OPTIONS = [
    click.option("--calibration", default=None,
                 help="Folder of .npz/.npy samples, or random:N (smoke tests only)."),
    click.option("--calibration-method", default="percentile", show_default=True,
                 type=click.Choice(["minmax", "percentile", "entropy", "mse"])),
    click.option("--quantization", "quantization_mode", default="auto", show_default=True,
                 type=click.Choice(["auto", "static", "dynamic"]),
                 help="int8 flavour: static Q/DQ from calibration, or dynamic MatMul/Gemm."),
    click.option("--exclude", multiple=True,
                 help="Node name or op type kept in fp32 (repeatable, or comma separated)."),
    click.option("--max-accuracy-drop", type=float, default=None,
                 help="Keep the most sensitive layers in fp32 until the drop is within this "
                      "fraction (0.01 = one point)."),
    click.option("--prune", default=None, help="magnitude:S or channels:R, e.g. channels:0.3."),
    click.option("--speed-gate", is_flag=True,
                 help="Time int8 regions on the backend; slower ones go back to fp32."),
    click.option("--eval", "eval_data", default=None,
                 help="Folder of .npz/.npy samples for the accuracy report."),
]

REDUCE_KEYS = ("calibration", "calibration_method", "quantization_mode", "exclude",
               "max_accuracy_drop", "prune", "speed_gate", "eval_data")


def reduce_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the reduced-precision and pruning options to a click command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def split_exclude(values: tuple[str, ...] | list[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def wants_reduction(precision: str, options: dict[str, Any]) -> bool:
    return precision in ("int8", "fp16", "bf16") or bool(options.get("prune"))


def open_reduced(model: str, backend: str, target: str, precision: str,
                 options: dict[str, Any], threads: int | None = None,
                 opt_level: int = 2) -> tuple[Any, Any]:
    """(Session, ReduceResult) for the parsed command line options."""
    from kiln.compiler.calibrate import RandomCalibrationWarning, load_samples
    from kiln.compiler.frontend import import_model

    if options.get("max_accuracy_drop") is not None and not 0 <= options["max_accuracy_drop"] < 1:
        raise InputError("--max-accuracy-drop is a fraction in [0, 1), e.g. 0.01 for one point")
    ir_model = import_model(model)
    evals = load_samples(options["eval_data"], ir_model) if options.get("eval_data") else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomCalibrationWarning)
        opened = _open(ir_model, backend, target, precision, options, evals, threads, opt_level)
    for w in caught:
        if issubclass(w.category, RandomCalibrationWarning):
            click.secho(f"warning: {w.message}", fg="yellow", err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return opened


def _open(ir_model: Any, backend: str, target: str, precision: str, options: dict[str, Any],
          evals: Any, threads: int | None, opt_level: int) -> tuple[Any, Any]:
    from kiln.runtime.reduced import reduced_session

    return reduced_session(
        ir_model, backend=backend, target=target, precision=precision,
        calibration=options.get("calibration"),
        calibration_method=options.get("calibration_method", "percentile"),
        quantization_mode=options.get("quantization_mode", "auto"),
        exclude=split_exclude(options.get("exclude", ())),
        max_accuracy_drop=options.get("max_accuracy_drop"), prune=options.get("prune"),
        speed_gate=bool(options.get("speed_gate")), eval_samples=evals, threads=threads,
        opt_level=opt_level)
