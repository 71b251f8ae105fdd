"""The ``kiln compile`` options for int8 / fp16 / bf16 and pruning, ready to attach.

    @cli.command("compile")
    ...
    @reduce_options
    def compile_cmd(model, backend, target, precision, ..., **reduce):
        compiled, result = compile_reduced(model, backend, target, precision, reduce)
        for line in (result.lines() if result else []):
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
from typing import TYPE_CHECKING, Any

import click

from kiln.compiler.reduce import ReduceOptions, ReduceResult
from kiln.errors import InputError

if TYPE_CHECKING:
    from kiln.runtime.compile import Compiled

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

def reduce_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the reduced-precision and pruning options to a click command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def split_exclude(values: tuple[str, ...] | list[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def from_cli(values: dict[str, Any], model: Any = None) -> ReduceOptions:
    """The typed ``ReduceOptions`` for the parsed command line ``values``; ``--eval`` samples
    are read for ``model`` (an imported IR model). The graph is always converted, so the
    compile has its report."""
    from kiln.compiler.calibrate import load_samples

    drop = values.get("max_accuracy_drop")
    if drop is not None and not 0 <= drop < 1:
        raise InputError("--max-accuracy-drop is a fraction in [0, 1), e.g. 0.01 for one point")
    evals = load_samples(values["eval_data"], model) if values.get("eval_data") else None
    return ReduceOptions(
        calibration=values.get("calibration"),
        calibration_method=values.get("calibration_method", "percentile"),
        quantization_mode=values.get("quantization_mode", "auto"),
        exclude=tuple(split_exclude(values.get("exclude", ()))),
        max_accuracy_drop=drop, prune=values.get("prune"),
        speed_gate=bool(values.get("speed_gate")), eval_samples=evals,
        convert_precision=True)


def compile_reduced(model: str, backend: str, target: str, precision: str,
                    values: dict[str, Any], threads: int | None = None,
                    opt_level: int = 2, dims: dict[str, int] | None = None
                    ) -> tuple[Compiled, ReduceResult | None]:
    """``kiln.compile`` with the parsed command line options; returns the compiled model
    and its reduction report (an empty one when the graph already carried ``precision``,
    None when no reduction was asked for). Random-calibration warnings go to stderr."""
    from kiln.compiler.calibrate import RandomCalibrationWarning
    from kiln.compiler.frontend import import_model
    from kiln.runtime.compile import compile

    source: Any = model
    if values.get("eval_data"):  # the samples are read against the model's inputs
        source = import_model(model)
    reduce = from_cli(values, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomCalibrationWarning)
        compiled = compile(source, backend, target, precision, threads, opt_level,
                           reduce=reduce, **({"dims": dims} if dims else {}))
    for w in caught:
        if issubclass(w.category, RandomCalibrationWarning):
            click.secho(f"warning: {w.message}", fg="yellow", err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    reduction = compiled.reduction
    if reduction is None and reduce.asked(precision):  # the graph already carried it
        reduction = ReduceResult(compiled.model)
    return compiled, reduction
