"""Hostile models and feeds, each built in code, with the kiln error it must get.

A case builds ``(model, feeds, options)`` in a scratch folder; ``expect`` names the error
class and a regex its message must match. ``risky`` cases are the ones that would crash, hang
or exhaust memory inside a backend if kiln's check were missing (OpenVINO's SIGFPE on a Range
with delta 0, an endless Loop, a 2**60-element ConstantOfShape): they run in a child process.
``backends`` limits a case to the backends whose own limits make it hostile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from model_builders import model_from_value_infos as model
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

CPU_BACKENDS = ("onnxruntime", "openvino", "native")
F = TP.FLOAT


def vi(name: str, shape: Any = None, dtype: int = F) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, dtype, shape)


def const(name: str, value: Any, dtype: Any = np.int64) -> onnx.TensorProto:
    return nh.from_array(np.asarray(value, dtype=dtype), name)


def relu_model(shape: Any = (2, 4)) -> onnx.ModelProto:
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", list(shape))],
                 [vi("y", list(shape))])


def add_model() -> onnx.ModelProto:
    return model([h.make_node("Add", ["a", "b"], ["y"])], [vi("a", ["N", 4]), vi("b", ["N", 4])],
                 [vi("y", ["N", 4])])


def body(nodes: list, inputs: list, outputs: list, name: str = "body") -> onnx.GraphProto:
    return h.make_graph(nodes, name, inputs, outputs)


def x24(value: float = 1.0) -> np.ndarray:
    return np.full((2, 4), value, np.float32)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    category: str
    build: Callable[[Path], tuple[Any, dict | None, dict]]
    error: str                      # kiln error class name
    match: str                      # regex the message must match
    risky: bool = False
    backends: tuple[str, ...] = CPU_BACKENDS
    reaches_backend: bool = False   # passes import + static guards; refused at run
    # Why the case is not hostile for a backend as installed here (None: it is).
    moot: Callable[[str], str | None] | None = None


CASES: list[Case] = []


def case(category: str, error: str, match: str, **kw: Any) -> Callable:
    def register(fn: Callable[[Path], Any]) -> Callable:
        def build(folder: Path) -> tuple[Any, dict | None, dict]:
            result = fn(folder)
            if not isinstance(result, tuple):
                result = (result, None, {})
            elif len(result) == 2:
                result = (*result, {})
            return result

        CASES.append(Case(fn.__name__, category, build, error, match, **kw))
        return fn

    return register


def by_name(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


# -- protobuf ----------------------------------------------------------------------------
@case("protobuf", "ModelError", r"empty, not an ONNX model")
def empty_bytes(folder):
    return b""


@case("protobuf", "ModelError", r"not a valid ONNX protobuf \(truncated or corrupt\)")
def garbage_bytes(folder):
    return b"\xff\xfe\x00this is not a model at all\x07"


@case("protobuf", "ModelError", r"truncated or corrupt")
def truncated_model(folder):
    data = relu_model().SerializeToString()
    return data[: len(data) - 5]


@case("protobuf", "ModelError", r"has no graph")
def no_graph(folder):
    return onnx.ModelProto(ir_version=10).SerializeToString()


@case("protobuf", "ModelError", r"is a directory|not a regular file")
def path_is_folder(folder):
    return str(folder)


@case("protobuf", "ModelError", r"no such file")
def missing_file(folder):
    return str(folder / "absent.onnx")


# -- versions ----------------------------------------------------------------------------
@case("version", "ModelError", r"has no IR version")
def ir_version_zero(folder):
    m = relu_model()
    m.ir_version = 0
    return m


@case("version", "UnsupportedError", r"IR version 99 is not supported by kiln, which reads "
      r"IR versions 3 to \d+")
def ir_version_future(folder):
    m = relu_model()
    m.ir_version = 99
    return m


@case("version", "UnsupportedError", r"opset 9999 of domain 'ai.onnx' is not supported by "
      r"kiln, which reads opsets 1 to \d+")
def opset_9999(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])],
                 opset=9999)


@case("version", "ModelError", r"opset 0; opset versions start at 1")
def opset_zero(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=0)


@case("version", "ModelError", r"domain 'ai.onnx' is imported twice")
def opset_imported_twice(folder):
    m = relu_model()
    m.opset_import.append(h.make_opsetid("", 13))
    return m


@case("version", "UnsupportedError", r"domain 'evil.corp' is not supported by kiln")
def unknown_domain(folder):
    m = model([h.make_node("Steal", ["x"], ["y"], domain="evil.corp")], [vi("x", [2])],
              [vi("y", [2])])
    m.opset_import.append(h.make_opsetid("evil.corp", 1))
    return m


@case("version", "ModelError", r"domain 'ai.onnx.ml', which the model does not import")
def node_domain_not_imported(folder):
    return model([h.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml")], [vi("x", [2])],
                 [vi("y", [2])])


def _reads_opset_28(backend: str) -> str | None:
    from kiln.backends import registry

    limits = registry.backend_limits(backend)
    top = limits.opsets.get("", (0, 0))[1] if limits is not None else 0
    return f"{backend} as installed reads opset {top}, so opset 28 is not beyond it" \
        if top >= 28 else None


@case("version", "UnsupportedError", r"opset 28 of domain 'ai.onnx' is not supported by "
      r"(onnxruntime|openvino), which reads opsets \d+ to 2[5-7]",
      backends=("onnxruntime", "openvino"), moot=_reads_opset_28)
def opset_beyond_backend(folder):
    # Celu changed at opset 28, so the stamp cannot be lowered to what the backend reads
    # (a Relu at opset 27 would be restamped and run).
    return model([h.make_node("Celu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=28,
                 ir_version=12)


@case("version", "UnsupportedError", r"domain 'com.microsoft' is not supported by openvino",
      backends=("openvino",))
def contrib_domain_on_openvino(folder):
    """A contrib op OpenVINO's ONNX frontend has no converter for (com.microsoft Inverse;
    it does convert com.microsoft Gelu, so Gelu runs there and is no longer refused)."""
    m = model([h.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")], [vi("x", [2, 2])],
              [vi("y", [2, 2])])
    m.opset_import.append(h.make_opsetid("com.microsoft", 1))
    return m


@case("version", "UnsupportedError", r"node 'att' \(com.microsoft::Attention\): OpenVINO's "
      r"ONNX frontend crashed reading the model \(signal", risky=True, backends=("openvino",))
def contrib_attention_crashes_openvino(folder):
    """onnxruntime runs com.microsoft Attention without its bias input; OpenVINO 2026.4's
    frontend dies of SIGSEGV reading it. kiln asks OpenVINO about contrib nodes in a child
    process, so the crash costs the answer, not the process."""
    w = const("w", np.ones((8, 24)), np.float32)
    m = model([h.make_node("Attention", ["x", "w"], ["y"], domain="com.microsoft",
                           num_heads=2, name="att")], [vi("x", [1, 4, 8])],
              [vi("y", [1, 4, 8])], inits=(w,))
    m.opset_import.append(h.make_opsetid("com.microsoft", 1))
    return m


# -- structure ---------------------------------------------------------------------------
@case("structure", "ModelError", r"the graph has no outputs \(an empty graph")
def empty_graph(folder):
    return model([], [vi("x", [2])], [])


@case("structure", "ModelError", r"reads 'ghost', which is not a graph input, an initializer")
def undefined_input(folder):
    return model([h.make_node("Add", ["x", "ghost"], ["y"])], [vi("x", [2])], [vi("y", [2])])


@case("structure", "ModelError", r"reads 'W'.*missing initializer")
def missing_initializer(folder):
    return model([h.make_node("MatMul", ["x", "W"], ["y"])], [vi("x", [2, 3])],
                 [vi("y", [2, 4])], value_info=[vi("W", [3, 4])])


@case("structure", "ModelError", r"the graph has a cycle: Relu#\d -> Relu#\d")
def cycle(folder):
    return model([h.make_node("Relu", ["b"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
                  h.make_node("Add", ["x", "a"], ["y"])], [vi("x", [2])], [vi("y", [2])])


@case("structure", "ModelError", r"before node 1 produces it: nodes must be in topological")
def out_of_order(folder):
    return model([h.make_node("Relu", ["t"], ["y"]), h.make_node("Relu", ["x"], ["t"])],
                 [vi("x", [2])], [vi("y", [2])])


@case("structure", "ModelError", r"output name 'y' is listed twice")
def duplicate_output_names(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2]),
                                                                     vi("y", [2])])


@case("structure", "ModelError", r"graph input 'x' is listed twice")
def duplicate_input_names(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2]), vi("x", [2])],
                 [vi("y", [2])])


@case("structure", "ModelError", r"'y' is defined twice")
def value_defined_twice(folder):
    return model([h.make_node("Relu", ["x"], ["y"]), h.make_node("Neg", ["x"], ["y"])],
                 [vi("x", [2])], [vi("y", [2])])


@case("structure", "ModelError", r"initializer 'W' is listed twice")
def duplicate_initializer(folder):
    w = const("W", [1.0, 2.0], np.float32)
    return model([h.make_node("Add", ["x", "W"], ["y"])], [vi("x", [2])], [vi("y", [2])],
                 inits=(w, w))


@case("structure", "ModelError", r"graph output 'z' is never produced")
def output_never_produced(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2]),
                                                                     vi("z", [2])])


@case("structure", "ModelError", r"a node has no op_type")
def empty_op_type(folder):
    return model([h.make_node("", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])


@case("subgraph", "ModelError", r"then_branch has 2 outputs but the If node has 1")
def if_branch_arity(folder):
    then = body([h.make_node("Relu", ["x"], ["t1"]), h.make_node("Neg", ["x"], ["t2"])], [],
                [vi("t1", [2]), vi("t2", [2])], "then")
    other = body([h.make_node("Neg", ["x"], ["e1"])], [], [vi("e1", [2])], "else")
    return model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                 [vi("x", [2]), vi("c", [], TP.BOOL)], [vi("y", [2])])


@case("subgraph", "ModelError", r"else_branch: node 0 \(Add\) reads 'ghost'")
def if_body_undefined_input(folder):
    then = body([h.make_node("Relu", ["x"], ["t"])], [], [vi("t", [2])], "then")
    other = body([h.make_node("Add", ["x", "ghost"], ["e"])], [], [vi("e", [2])], "else")
    return model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                 [vi("x", [2]), vi("c", [], TP.BOOL)], [vi("y", [2])])


@case("subgraph", "ModelError", r"Loop body has 2 inputs, expected 3")
def loop_body_arity(folder):
    loop_body = body([h.make_node("Identity", ["cond_in"], ["cond_out"]),
                      h.make_node("Identity", ["x"], ["v_out"])],
                     [vi("i", [], TP.INT64), vi("cond_in", [], TP.BOOL)],
                     [vi("cond_out", [], TP.BOOL), vi("v_out", [2])])
    return model([h.make_node("Loop", ["M", "", "x"], ["y"], body=loop_body)],
                 [vi("x", [2])], [vi("y", [2])], inits=(const("M", 3),))


@case("subgraph", "ModelError", r"Scan body has 1 inputs but the node has 2")
def scan_body_arity(folder):
    scan_body = body([h.make_node("Identity", ["s"], ["s_out"])], [vi("s", [2])],
                     [vi("s_out", [2])])
    return model([h.make_node("Scan", ["init", "xs"], ["final"], body=scan_body,
                              num_scan_inputs=1)],
                 [vi("init", [2]), vi("xs", [3, 2])], [vi("final", [2])])


def nested_if(depth: int) -> onnx.ModelProto:
    graph = body([h.make_node("Relu", ["x"], ["o0"])], [], [vi("o0", [2])], "leaf")
    for level in range(1, depth + 1):
        other = body([h.make_node("Neg", ["x"], [f"e{level}"])], [], [vi(f"e{level}", [2])],
                     f"else{level}")
        graph = body([h.make_node("If", ["c"], [f"o{level}"], then_branch=graph,
                                  else_branch=other)], [], [vi(f"o{level}", [2])],
                     f"level{level}")
    return model(list(graph.node), [vi("x", [2]), vi("c", [], TP.BOOL)],
                 [vi(f"o{depth}", [2])])


@case("subgraph", "ModelError", r"subgraphs are nested 1[37] deep; kiln allows at most 1[26]",
      backends=("openvino",))
def if_nested_too_deep(folder):
    """OpenVINO's compile time doubles per level of nested If past 12 (12.7 s at 20), so it
    keeps a limit of 12; for the other backends only protobuf's limit applies (below)."""
    return nested_if(20)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def nested_if_bytes(depth: int) -> bytes:
    """``nested_if(depth)`` serialized by hand: protobuf will not build a message nested
    deeper than it parses. GraphProto: node 1, name 2, input 11, output 12; NodeProto: input
    1, output 2, op_type 4, attribute 5; AttributeProto: name 1, g 6, type 20 (GRAPH = 5)."""
    graph = body([h.make_node("Relu", ["x"], ["o0"])], [], [vi("o0", [2])]).SerializeToString()
    for level in range(1, depth + 1):
        other = body([h.make_node("Neg", ["x"], [f"e{level}"])], [], [vi(f"e{level}", [2])],
                     f"else{level}").SerializeToString()
        graph_attr = _varint(20 << 3) + _varint(5)
        node = (_field(1, b"c") + _field(2, f"o{level}".encode()) + _field(4, b"If")
                + _field(5, _field(1, b"then_branch") + _field(6, graph) + graph_attr)
                + _field(5, _field(1, b"else_branch") + _field(6, other) + graph_attr))
        graph = (_field(1, node) + _field(2, f"level{level}".encode())
                 + _field(12, vi(f"o{level}", [2]).SerializeToString()))
    graph += _field(11, vi("x", [2]).SerializeToString()) + _field(
        11, vi("c", [], TP.BOOL).SerializeToString())
    head = onnx.ModelProto(ir_version=10, opset_import=[h.make_opsetid("", 17)])
    return head.SerializeToString() + _field(7, graph)


@case("subgraph", "ModelError", r"nests messages deeper than protobuf's limit of 100 levels")
def if_nested_beyond_protobuf(folder):
    return nested_if_bytes(40)


@case("subgraph", "ModelError", r"more than 255 If/Loop/Scan nodes, the most openvino compiles",
      backends=("openvino",))
def too_many_control_flow_nodes(folder):
    nodes, prev = [], "x"
    for i in range(300):
        then = body([h.make_node("Relu", [prev], [f"t{i}"])], [], [vi(f"t{i}", [2])], f"t{i}")
        other = body([h.make_node("Neg", [prev], [f"e{i}"])], [], [vi(f"e{i}", [2])], f"e{i}")
        nodes.append(h.make_node("If", ["c"], [f"v{i}"], then_branch=then, else_branch=other))
        prev = f"v{i}"
    return model(nodes, [vi("x", [2]), vi("c", [], TP.BOOL)], [vi(prev, [2])])


# -- declared dims and data --------------------------------------------------------------
@case("dims", "ModelError", r"input value 'x': dim -3 at axis 0 is negative")
def negative_input_dim(folder):
    return relu_model((-3, 4))


@case("dims", "ModelError", r"dim 1125899906842624 at axis 1 is absurd: kiln allows at most")
def absurd_dim(folder):
    return relu_model((1, 2**50))


@case("dims", "ModelError", r"the element count of dims .* overflows int64")
def dim_product_overflows(folder):
    return relu_model((2**31 - 1, 2**31 - 1, 2**31 - 1))


@case("dims", "ModelError", r"dim 4294967296 at axis 0 is absurd: openvino allows at most "
      r"2147483647", backends=("openvino",))
def dim_beyond_int32_openvino(folder):
    return relu_model((2**32,))


@case("dims", "ModelError", r"initializer tensor 'W': dim -2 at axis 0 is negative")
def negative_initializer_dim(folder):
    w = onnx.TensorProto(name="W", data_type=F, dims=[-2, 2])
    return model([h.make_node("Add", ["x", "W"], ["y"])], [vi("x", [2])], [vi("y", [2])],
                 inits=(w,))


@case("dims", "ModelError", r"tensor 'W': holds 12 bytes of data but dims \[1000, 1000\] need "
      r"4000000 \(truncated or corrupt\)")
def truncated_initializer(folder):
    w = onnx.TensorProto(name="W", data_type=F, dims=[1000, 1000], raw_data=b"\0" * 12)
    return model([h.make_node("MatMul", ["x", "W"], ["y"])], [vi("x", [1, 1000])],
                 [vi("y", [1, 1000])], inits=(w,))


@case("dims", "ModelError", r"tensor 'W': element type 999 is no ONNX data type")
def initializer_bad_dtype(folder):
    w = onnx.TensorProto(name="W", data_type=999, dims=[2], raw_data=b"\0" * 8)
    return model([h.make_node("Add", ["x", "W"], ["y"])], [vi("x", [2])], [vi("y", [2])],
                 inits=(w,))


@case("dims", "ModelError", r"value 'x' has element type 0, which is no ONNX data type")
def input_undefined_dtype(folder):
    return model([h.make_node("Relu", ["x"], ["y"])], [vi("x", [2], 0)], [vi("y", [2])])


@case("dims", "ModelError", r"holds 3 values in float_data but dims \[4\] need 4")
def constant_short_of_values(folder):
    t = onnx.TensorProto(name="k", data_type=F, dims=[4], float_data=[1, 2, 3])
    return model([h.make_node("Constant", [], ["k"], value=t), h.make_node("Add", ["x", "k"],
                                                                          ["y"])],
                 [vi("x", [4])], [vi("y", [4])])


# -- resources (static) ------------------------------------------------------------------
@case("resource", "ResourceError", r"ConstantOfShape.*needs .* GiB.*more than max_memory",
      risky=True)
def constant_of_shape_huge(folder):
    return model([h.make_node("ConstantOfShape", ["s"], ["y"])], [], [vi("y", ["a", "b", "c"])],
                 inits=(const("s", [2**20, 2**20, 2**20]),))


@case("resource", "ResourceError", r"Expand.*expanded to \[1048576, 1048576\].*max_memory",
      risky=True)
def expand_huge(folder):
    return model([h.make_node("Expand", ["x", "s"], ["y"])], [vi("x", [1])], [vi("y", ["a", "b"])],
                 inits=(const("s", [2**20, 2**20]),))


@case("resource", "ResourceError", r"Tile.*repeats \[1048576, 1048576\].*max_memory",
      risky=True)
def tile_huge(folder):
    return model([h.make_node("Tile", ["x", "r"], ["y"])], [vi("x", [4, 4])], [vi("y", ["a", "b"])],
                 inits=(const("r", [2**20, 2**20]),))


@case("resource", "ResourceError", r"Range.*1000000000000000 elements.*max_memory", risky=True)
def range_huge(folder):
    return model([h.make_node("Range", ["a", "b", "d"], ["y"])], [], [vi("y", ["n"], TP.INT64)],
                 inits=(const("a", 0), const("b", 10**15), const("d", 1)))


@case("resource", "ModelError", r"Range.*has delta 0", risky=True)
def range_delta_zero(folder):
    return model([h.make_node("Range", ["a", "b", "d"], ["r"]),
                  h.make_node("Cast", ["r"], ["y"], to=F)], [], [vi("y", ["n"])],
                 inits=(const("a", 0), const("b", 10), const("d", 0)))


@case("resource", "ResourceError", r"Resize.*max_memory", risky=True)
def resize_huge(folder):
    return model([h.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
                 [vi("x", [1, 1, 4, 4])], [vi("y", ["a", "b", "c", "d"])],
                 inits=(const("sc", [1, 1, 1e5, 1e5], np.float32),))


def counting_loop(trip: str, cond: str, body_cond_passthrough: bool = False) -> list:
    nodes = [h.make_node("Identity", ["cond_in"], ["cond_out"])]
    if not body_cond_passthrough:
        nodes = [h.make_node("Constant", [], ["cond_out"], value=h.make_tensor("t", TP.BOOL,
                                                                                [], [True]))]
    nodes.append(h.make_node("Constant", [], ["one"], value=h.make_tensor("o", F, [1], [1.0])))
    nodes.append(h.make_node("Add", ["v_in", "one"], ["v_out"]))
    loop_body = body(nodes, [vi("i", [], TP.INT64), vi("cond_in", [], TP.BOOL),
                             vi("v_in", [1])], [vi("cond_out", [], TP.BOOL), vi("v_out", [1])])
    return [h.make_node("Loop", [trip, cond, "x"], ["y"], body=loop_body)]


@case("resource", "ResourceError", r"Loop.*would run 1099511627776 iterations, more than the",
      risky=True)
def loop_trip_count_huge(folder):
    return model(counting_loop("M", ""), [vi("x", [1])], [vi("y", [1])],
                 inits=(const("M", 2**40),))


@case("resource", "ResourceError", r"Loop.*never ends: it has no trip count and its condition",
      risky=True)
def loop_never_ends(folder):
    m = model(counting_loop("", "", body_cond_passthrough=True), [vi("x", [1])],
              [vi("y", [1])], inits=())
    return m, {"x": np.zeros(1, np.float32)}


@case("resource", "ResourceError", r"shape arithmetic at .*Mul.* overflows int64", risky=True)
def shape_arithmetic_overflow(folder):
    return model([h.make_node("Mul", ["a", "b"], ["s"], name="Mul"),
                  h.make_node("ConstantOfShape", ["s"], ["y"])], [], [vi("y", ["n"])],
                 inits=(const("a", [2**62]), const("b", [4])))


@case("resource", "ResourceError", r"the model's initializers \(together\) needs .* more than "
      r"max_memory")
def initializers_over_max_memory(folder):
    w = const("W", np.ones(2**18), np.float32)  # 1 MiB
    m = model([h.make_node("Add", ["x", "W"], ["y"])], [vi("x", [2**18])], [vi("y", [2**18])],
              inits=(w,))
    return m, None, {"max_memory": 2**19}


@case("resource", "ResourceError", r"max_memory must be a positive number of bytes")
def max_memory_invalid(folder):
    return relu_model(), None, {"max_memory": -5}


@case("resource", "ResourceError", r"timeout must be a positive number of seconds")
def timeout_invalid(folder):
    return relu_model(), None, {"timeout": 0}


# -- feeds -------------------------------------------------------------------------------
@case("feeds", "InputError", r"input 'x' has dtype float64, expected float32")
def feed_wrong_dtype(folder):
    return relu_model(), {"x": np.ones((2, 4))}


@case("feeds", "InputError", r"input 'x' has rank 3 .*expected rank 2")
def feed_wrong_rank(folder):
    return relu_model(), {"x": np.ones((2, 4, 1), np.float32)}


@case("feeds", "InputError", r"input 'x' has size 5 at axis 1, expected 4")
def feed_wrong_fixed_dim(folder):
    return relu_model(), {"x": np.ones((2, 5), np.float32)}


@case("feeds", "InputError", r"input 'b' axis 0 is dim 'N' = 3, but input 'a' already bound "
      r"'N' = 2")
def feed_symbolic_dims_disagree(folder):
    return add_model(), {"a": np.ones((2, 4), np.float32), "b": np.ones((3, 4), np.float32)}


@case("feeds", "InputError", r"missing input\(s\) \['b'\]")
def feed_missing(folder):
    return add_model(), {"a": np.ones((2, 4), np.float32)}


@case("feeds", "InputError", r"unknown input\(s\) \['z'\]")
def feed_unknown_name(folder):
    return relu_model(), {"x": x24(), "z": x24()}


@case("feeds", "InputError", r"input 'x' must be a numpy.ndarray, not list")
def feed_not_an_array(folder):
    return relu_model(), {"x": [[1.0] * 4] * 2}


@case("feeds", "InputError", r"input 'x' has dtype object, expected float32")
def feed_object_dtype(folder):
    return relu_model(), {"x": np.empty((2, 4), dtype=object)}


@case("feeds", "InputError", r"feeds must be a mapping of input name to numpy array, not list")
def feeds_not_a_mapping(folder):
    return relu_model(), [x24()]


@case("feeds", "ResourceError", r"input 'x' \(shape \[131072, 131072\], made contiguous\) "
      r"needs 64 GiB", risky=True)
def feed_broadcast_view_huge(folder):
    """A zero-stride view costs nothing until kiln makes it contiguous: 64 GiB."""
    m = model([h.make_node("Relu", ["x"], ["y"])], [vi("x", ["N", "M"])], [vi("y", ["N", "M"])])
    return m, {"x": np.broadcast_to(np.float32(1), (2**17, 2**17))}


@case("feeds", "InputError", r"input 'x' has shape \[2147483649\]: OpenVINO keeps dims in "
      r"32 bits", risky=True, backends=("openvino",))
def feed_dim_beyond_int32_openvino(folder):
    m = model([h.make_node("Identity", ["x"], ["y"])], [vi("x", ["N"], TP.UINT8)],
              [vi("y", ["N"], TP.UINT8)])
    return m, {"x": np.broadcast_to(np.uint8(1), (2**31 + 1,))}


# -- run-time bounds (the feed reaches an index- or size-sensitive op) -------------------
def gather_model(op: str = "Gather", **attrs: Any) -> onnx.ModelProto:
    data = const("data", np.arange(15, dtype=np.float32).reshape(5, 3), np.float32)
    return model([h.make_node(op, ["data", "idx"], ["y"], **attrs)], [vi("idx", [2], TP.INT64)],
                 [vi("y", ["a", "b"])], inits=(data,))


@case("bounds", "InputError", r"input 'idx' holds index 7, out of range for axis 0 of size 5 "
      r"at .*Gather", risky=True, reaches_backend=True)
def gather_index_out_of_range(folder):
    return gather_model(), {"idx": np.array([1, 7], np.int64)}


@case("bounds", "InputError", r"input 'idx' holds index -6, out of range for axis 0 of size 5",
      risky=True, reaches_backend=True)
def gather_negative_index_out_of_range(folder):
    return gather_model(), {"idx": np.array([-6, 0], np.int64)}


@case("bounds", "InputError", r"input 'idx' holds index 3, out of range for axis 1 of size 3 "
      r"at .*GatherElements", risky=True, reaches_backend=True)
def gather_elements_out_of_range(folder):
    data = const("data", np.zeros((2, 3)), np.float32)
    m = model([h.make_node("GatherElements", ["data", "idx"], ["y"], axis=1)],
              [vi("idx", [2, 2], TP.INT64)], [vi("y", [2, 2])], inits=(data,))
    return m, {"idx": np.array([[0, 3], [1, 2]], np.int64)}


@case("bounds", "InputError", r"input 'idx' holds index 9, out of range for axis 0 of size 4 "
      r"at .*ScatterND", risky=True, reaches_backend=True)
def scatter_nd_out_of_range(folder):
    m = model([h.make_node("ScatterND", ["data", "idx", "upd"], ["y"])],
              [vi("data", [4, 2]), vi("idx", [1, 1], TP.INT64), vi("upd", [1, 2])],
              [vi("y", [4, 2])])
    return m, {"data": np.zeros((4, 2), np.float32), "idx": np.array([[9]], np.int64),
               "upd": np.ones((1, 2), np.float32)}


@case("bounds", "InputError", r"Range.*has delta 0", risky=True, reaches_backend=True)
def range_feed_delta_zero(folder):
    m = model([h.make_node("Range", ["a", "b", "d"], ["y"])],
              [vi("a", [], TP.INT64), vi("b", [], TP.INT64), vi("d", [], TP.INT64)],
              [vi("y", ["n"], TP.INT64)])
    return m, {"a": np.array(0, np.int64), "b": np.array(10, np.int64),
               "d": np.array(0, np.int64)}


@case("bounds", "ResourceError", r"ConstantOfShape.*shape \[1048576, 1048576, 1048576\] from "
      r"input 's'.*max_memory", risky=True, reaches_backend=True)
def constant_of_shape_feed_huge(folder):
    m = model([h.make_node("ConstantOfShape", ["s"], ["y"])], [vi("s", [3], TP.INT64)],
              [vi("y", ["a", "b", "c"])])
    return m, {"s": np.array([2**20] * 3, np.int64)}


@case("bounds", "ResourceError", r"input 'M' asks .*Loop.* for 1099511627776 iterations",
      risky=True, reaches_backend=True)
def loop_trip_count_feed_huge(folder):
    m = model(counting_loop("M", ""), [vi("M", [], TP.INT64), vi("x", [1])], [vi("y", [1])],
              inits=())
    return m, {"M": np.array(2**40, np.int64), "x": np.zeros(1, np.float32)}


@case("resource", "ResourceError", r"run did not finish within the timeout of 0.3 s",
      risky=True, reaches_backend=True)
def run_exceeds_timeout(folder):
    """A Loop long enough to outlast the timeout, short enough to end on its own."""
    m = model(counting_loop("M", ""), [vi("x", [1])], [vi("y", [1])],
              inits=(const("M", 20_000_000),))
    return m, {"x": np.zeros(1, np.float32)}, {"timeout": 0.3, "max_loop_iterations": 2**25}


# -- regressions found by fuzz/fuzz_frontend.py ------------------------------------------
NON_UTF8 = bytes([0x0A, 0x06, 0x08, 0x80, 0x80, 0x80, 0x80, 0x10])


def opaque_input_proto() -> onnx.ModelProto:
    """Input 'x' of an opaque type whose name is not UTF-8 (Python's protobuf will not set
    such a string, so the bytes are patched into the serialized model and parsed back)."""
    m = relu_model((4,))
    m.graph.input[0].type.Clear()
    m.graph.input[0].type.opaque_type.name = "@" * len(NON_UTF8)
    data = m.SerializeToString().replace(b"@" * len(NON_UTF8), NON_UTF8)
    parsed = onnx.ModelProto()
    parsed.ParseFromString(data)
    return parsed


@case("fuzz", "ModelError", r"a Opaque.name is not valid UTF-8 text")
def fuzz_opaque_input_non_utf8(folder):
    """onnx shape inference raised UnicodeDecodeError (not a kiln error) on this input."""
    return opaque_input_proto()


@case("structure", "ModelError", r"value 'x' has an opaque type; kiln runs tensors")
def opaque_input_type(folder):
    m = relu_model((4,))
    m.graph.input[0].type.Clear()
    m.graph.input[0].type.opaque_type.name = "handle"
    return m


@case("fuzz", "ModelError", r"node 0 \(Expand\): input 1 \('s', shape\) is complex64, but "
      r"Expand-17 takes int64")
def fuzz_expand_complex_shape(folder):
    """The checker lets a complex64 Expand shape through (its shape inference is not strict);
    the guards' size estimate warned and cast it to int. Now kiln checks the types of inputs
    it knows before inference against the op's schema."""
    return model([h.make_node("Expand", ["x", "s"], ["y"])], [vi("x", [1])], [vi("y", ["a", "b"])],
                 inits=(const("s", [2 + 1j, 3], np.complex64),)), {"x": np.ones(1, np.float32)}


@case("fuzz", "ModelError", r"Range.*start, limit and delta must each hold one value, not "
      r"\[0, 1, 1\]")
def fuzz_range_empty_start(folder):
    """The guards' Range estimate indexed the empty start tensor (IndexError)."""
    return model([h.make_node("Range", ["a", "b", "d"], ["y"])], [], [vi("y", ["n"], TP.INT64)],
                 inits=(const("a", np.zeros(0)), const("b", 10**15), const("d", 1)))


@case("fuzz", "ModelError", r"a NodeProto.op_type is not valid UTF-8 text")
def fuzz_op_type_not_utf8(folder):
    """Python's protobuf returned the op_type as bytes, which onnx.defs.get_schema refused
    with a TypeError. Built by patching the serialized model, as protobuf will not set it."""
    m = model([h.make_node("@@", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    return m.SerializeToString().replace(b"@@", b"I\x9a")


@case("fuzz", "ModelError", r"tensor 'data': the element count of dims .* overflows int64 "
      r"\(ignoring its 0 dims\)")
def fuzz_empty_initializer_huge_dims(folder):
    """0 elements, but numpy refuses the shape (its non-zero dims overflow): the native plan
    builder raised ValueError from numpy."""
    data = onnx.TensorProto(name="data", data_type=F, dims=[0] + [2**31 - 1] * 3)
    return model([h.make_node("GatherElements", ["data", "idx"], ["y"], axis=1)],
                 [vi("idx", [2, 2], TP.INT64)], [vi("y", [2, 2])], inits=(data,))


def expected(c: Case, backend: str) -> tuple[str, str]:
    """(error class, message regex) ``c`` must raise on ``backend``: the same on every backend,
    since kiln refuses before the backend runs (native runs what it lacks on its fallback)."""
    return c.error, c.match


def run_case(c: Case, backend: str, folder: Path) -> tuple[str, str]:
    """Build and run ``c`` on ``backend``; returns (outcome, message).

    outcome is the kiln error class name, "ok" if nothing was raised, or "<not kiln> X" for any
    other exception type.
    """
    import kiln

    source, feeds, options = c.build(folder)
    try:
        session = kiln.Session(source, backend=backend, **options)
        session.run(None, feeds if feeds is not None else {})
    except kiln.KilnError as exc:
        return type(exc).__name__, str(exc)
    except Exception as exc:  # the bug this suite exists to catch
        return f"<not kiln> {type(exc).__name__}", str(exc)
    return "ok", ""
