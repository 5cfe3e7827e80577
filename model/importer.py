"""quicksilver import: a Hugging Face checkpoint directory of a supported diffusion coder family (config.json,
*.safetensors shards, tokenizer.json) → a quicksilver model directory the engine, server and language server
serve unchanged: an ONNX graph with the interface `quicksilver export` writes, the family's tokenizer, and a card
with its conventions (model/families.py), the source's hashes and the parity measured. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from model.export import PARITY_ATOL, export_onnx, parity
from model.families import FAMILIES, CheckpointError, Family, detect
from model.imported import ImportedTransformer
from model.tokenizer import TOKENIZER_FILE, CodeTokenizer, file_sha256

PRECISIONS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}
EXTERNAL_DATA_BYTES = 1 << 30     # graphs larger than this keep their weights in an external data file (ONNX's
                                  # protobuf limit is 2 GB)
INT4_BLOCK = 32                   # block size of ONNX Runtime's 4-bit MatMul quantizer
INT4_ACCURACY = 4                 # its accuracy level 4: activations in int8 on the CPU (faster than fp32 compute: 4.0
                                  # against 5.2 ms a pass at d_model 256). The embedding table stays fp32: quantizing
                                  # Gather needs opset 21, and the graph is opset 17
CARD_FILE = "card.json"


def added_tokens(hf_dir: Path) -> set[str]:
    """The added (special) tokens of the checkpoint's tokenizer.json, which tell some families apart."""
    path = hf_dir / TOKENIZER_FILE
    if not path.exists():
        raise CheckpointError(f"{path} is missing: quicksilver reads the fast-tokenizer file (transformers writes "
                              "it with AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))")
    try:
        return {t["content"] for t in json.loads(path.read_text()).get("added_tokens", [])}
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a tokenizers file ({e})") from None


def read_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors shards, as float32 (an index file lists the shards)."""
    from safetensors.torch import load_file

    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index ({e})") from None
    else:
        shards = sorted(p.name for p in hf_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{hf_dir} has no *.safetensors weights (a PyTorch .bin checkpoint must be converted "
                              "to safetensors first)")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not (hf_dir / shard).exists():
            raise CheckpointError(f"{hf_dir / shard} is missing (listed in {index.name})")
        try:
            tensors.update({k: v.float() for k, v in load_file(str(hf_dir / shard)).items()})
        except Exception as e:   # safetensors' own error for a truncated or damaged file
            raise CheckpointError(f"{hf_dir / shard} cannot be read ({str(e)[:200]}): truncated or damaged?") from None
    return tensors


def build(family: Family, cfg: dict, tensors: dict[str, torch.Tensor]) -> ImportedTransformer:
    """The network with the checkpoint's weights; every weight must be there with its shape, and every tensor of
    the checkpoint must be used (a leftover means a layout this importer does not understand)."""
    try:
        c = family.config(cfg)
    except KeyError as e:
        raise CheckpointError(f"config.json lacks {e} (a {family.name} model's config has it): not a {family.name} "
                              "checkpoint? (--family names another)") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"config.json has a value a {family.name} model cannot take ({e})") from None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in
               (c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.d_model, c.d_ff, c.rope_theta, c.rms_eps)) or \
            not all(isinstance(v, int) for v in (c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.d_model, c.d_ff)):
        raise CheckpointError("config.json's sizes must be positive integers (and rope_theta, rms_norm_eps positive "
                              f"numbers): {c}")
    if c.n_head % c.n_kv_head:
        raise CheckpointError(f"config.json has {c.n_head} attention heads, not a multiple of its {c.n_kv_head} "
                              "key/value heads")
    top = family.names(None)
    if top["embed.weight"] in tensors:   # the embedding's rows (Qwen2 and LLaDA pad their tables past the tokenizer)
        c.vocab_size = tensors[top["embed.weight"]].shape[0]
    c.tied = c.tied or top["head.weight"] not in tensors   # no output head: it is the embedding
    held = 0   # layers the checkpoint holds, counted before a network of config.json's size is made
    while any(n in tensors for n in family.names(held).values()):
        held += 1
    if held != c.n_layer:
        raise CheckpointError(f"config.json says {c.n_layer} layers; the checkpoint holds {held}")
    with torch.device("meta"):   # shapes first: a config that does not match the tensors allocates nothing
        expected = {k: tuple(v.shape) for k, v in ImportedTransformer(c).state_dict().items()}
    names = dict(top)
    for i in range(c.n_layer):
        names.update(family.names(i))
    for ours, shape in expected.items():
        theirs = names.get(ours)
        if theirs in tensors and tuple(tensors[theirs].shape) != shape:
            raise CheckpointError(f"tensor {theirs} has shape {tuple(tensors[theirs].shape)}; config.json implies "
                                  f"{shape}")
    wanted = {ours: names.get(ours) for ours in expected if not (ours == "head.weight" and c.tied)}
    missing = [theirs or ours for ours, theirs in wanted.items() if theirs not in tensors]
    if missing:
        raise CheckpointError(f"the checkpoint lacks {len(missing)} tensor(s) a {family.name} model has, e.g. "
                              f"{missing[:3]}")
    leftover = sorted(set(tensors) - set(wanted.values()))
    if leftover:
        raise CheckpointError(f"the checkpoint has {len(leftover)} tensor(s) a {family.name} model does not use, "
                              f"e.g. {leftover[:3]}: not a {family.name} checkpoint?")
    model = ImportedTransformer(c)   # every check passed: now the real (allocated) network
    state = model.state_dict()
    for ours, theirs in wanted.items():
        state[ours] = tensors[theirs]
    model.load_state_dict(state)
    return model.eval()


def read_tokenizer(hf_dir: Path, family: Family, cfg: dict, rows: int) -> CodeTokenizer:
    """The family's tokenizer with its roles, checked against config.json's mask id and the embedding's size."""
    path = hf_dir / TOKENIZER_FILE
    try:
        tok = CodeTokenizer.load(path, family.special_tokens)
    except ValueError as e:
        missing = str(e).split(";")[0]
        raise CheckpointError(f"{path}: {missing}, which a {family.name} tokenizer has: not a {family.name} "
                              "checkpoint? (--family names another)") from None
    except Exception as e:   # tokenizers' own error for a file that is not a tokenizer
        raise CheckpointError(f"{path} cannot be loaded by tokenizers ({str(e)[:200]})") from None
    if family.mask_key in cfg and cfg[family.mask_key] != tok.mask_id:
        raise CheckpointError(f"config.json says {family.mask_key} {cfg[family.mask_key]}, but the tokenizer's "
                              f"{family.special_tokens['mask']} is {tok.mask_id}: mismatched files")
    if tok.vocab_size > rows:
        raise CheckpointError(f"the tokenizer has {tok.vocab_size} tokens but the embedding only {rows} rows")
    return tok


def save_graph(src: Path, dst: Path, external: bool) -> None:
    """One graph file, with its weights in `dst`.data when asked or when it is large (torch's exporter scatters the
    weights of a large model over many files; ONNX Runtime reads one file beside the graph)."""
    import onnx

    write_graph(onnx.load(str(src)), dst, external)


def write_graph(m, dst: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(m, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=0)
    else:
        onnx.save_model(m, str(dst))


def convert(fp32: Path, precision: str, dst: Path, external: bool) -> None:
    """The fp32 graph → the precision asked for: fp16 (for CUDA; inputs and outputs stay float32), int8 (dynamic
    quantisation) or int4 (ONNX Runtime's block-wise 4-bit MatMul quantizer) for CPU."""
    import onnx

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = dst.with_name("int8-tmp.onnx")
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, use_external_data_format=True)
        m = onnx.load(str(tmp))
        for p in dst.parent.glob("int8-tmp.onnx*"):
            p.unlink()
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=INT4_BLOCK, is_symmetric=True,
                                 accuracy_level=INT4_ACCURACY)
        q.process()
        m = q.model.model
    write_graph(m, dst, external)


def read_config(hf_dir: Path) -> dict:
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a directory: point at a Hugging Face checkpoint directory")
    path = hf_dir / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path} is missing: point at a Hugging Face checkpoint directory")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(cfg).__name__}")
    return cfg


def check_out(hf_dir: Path, out: Path) -> Path:
    """Where the model directory may go: never the checkpoint itself, a folder holding it, a file, or a folder
    that is not a model directory (replacing one is what `--out` does; deleting anything else is not)."""
    out_abs, src = Path(out).resolve(), hf_dir.resolve()
    if out_abs == src or src.is_relative_to(out_abs):
        raise CheckpointError(f"--out {out} would replace the checkpoint being imported ({hf_dir}): choose another "
                              "directory")
    if Path(out).is_symlink() or (out_abs.exists() and not out_abs.is_dir()):
        raise CheckpointError(f"--out {out} is a file or a link: name a directory to write")
    if out_abs.is_dir() and any(out_abs.iterdir()) and not (out_abs / CARD_FILE).exists():
        raise CheckpointError(f"--out {out} is a non-empty directory that is not a quicksilver model directory "
                              "(no card.json): choose a new or empty directory")
    return out_abs


def import_checkpoint(hf_dir: Path, out: Path, precision: str = "fp32", family_name: str | None = None,
                      external: bool = False) -> dict:
    hf_dir = Path(hf_dir)
    if precision not in PRECISIONS:
        raise CheckpointError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    cfg = read_config(hf_dir)
    out = check_out(hf_dir, out)
    family = detect(cfg, added_tokens(hf_dir), family_name)
    t0 = time.time()
    model = build(family, cfg, read_tensors(hf_dir))
    tok = read_tokenizer(hf_dir, family, cfg, model.cfg.vocab_size)
    tmp = out.with_name(out.name + ".import-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        card = _write(model, family, tok, hf_dir, tmp, out.name, precision, external, t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # nothing half-written is left behind
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return card


def _write(model, family: Family, tok: CodeTokenizer, hf_dir: Path, tmp: Path, name: str, precision: str,
           external: bool, t0: float) -> dict:
    """The model directory's files in `tmp`: the graph (checked for parity first), the tokenizer, the card."""
    (tmp / "fp32").mkdir(parents=True)
    with torch.no_grad():
        export_onnx(model, tmp / "fp32" / "model.onnx")
    diff = parity(model, tmp / "fp32" / "model.onnx")
    if diff > PARITY_ATOL:
        raise CheckpointError(f"ONNX parity check failed: max logit difference {diff:.2e} > {PARITY_ATOL:.0e}")
    large = external or any(p.name != "model.onnx" for p in (tmp / "fp32").iterdir()) or \
        (tmp / "fp32" / "model.onnx").stat().st_size > EXTERNAL_DATA_BYTES
    if precision == "fp32":
        save_graph(tmp / "fp32" / "model.onnx", tmp / PRECISIONS["fp32"], large)
    else:
        convert(tmp / "fp32" / "model.onnx", precision, tmp / PRECISIONS[precision], large)
    shutil.rmtree(tmp / "fp32")
    shutil.copy(hf_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    source_files = sorted(p.name for p in hf_dir.iterdir() if p.is_file())
    card = {
        "name": name,
        "config": model.cfg.to_card(),
        "objective": "diffusion",
        "conventions": {"family": family.name, "shift": family.shift, "rope_pairs": "half",
                        "rope_theta": model.cfg.rope_theta, "special_tokens": family.special_tokens,
                        "infill": "prefix-window-suffix"},
        "special_ids": {"mask": tok.mask_id, "eom": tok.eom_id, "eos": tok.eos_id, "bos": tok.bos_id,
                        "pad": tok.pad_id},
        "tokenizer_sha256": file_sha256(tmp / TOKENIZER_FILE),
        "imported": {
            "from": str(hf_dir.resolve()), "family_source": family.source, "precision": precision,
            "config_sha256": hashlib.sha256((hf_dir / "config.json").read_bytes()).hexdigest(),
            "source_files": {name: file_sha256(hf_dir / name) for name in source_files},
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
        },
        "parity_max_abs_diff": diff, "parity_atol": PARITY_ATOL,
    }
    card["files"] = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    (tmp / CARD_FILE).write_text(json.dumps(card, indent=1))
    return card


def add_arguments(p) -> None:
    p.add_argument("hf_dir", type=Path, help="a Hugging Face checkpoint directory (config.json, *.safetensors, "
                                             "tokenizer.json) you already have")
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced if it exists)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="fp32; fp16 for CUDA; int8 (dynamic) or int4 (block-wise MatMul) for CPU")
    p.add_argument("--family", choices=list(FAMILIES), help="the family, when config.json's model_type does not "
                                                            "say (Open-dCoder's says qwen2)")
    p.add_argument("--external-data", action="store_true",
                   help="keep the weights in a .data file beside the graph (automatic above 1 GB)")


def run(args) -> None:
    try:
        card = import_checkpoint(args.hf_dir, args.out, args.precision, args.family, args.external_data)
    except CheckpointError as e:
        raise SystemExit(f"quicksilver import: {e}") from None
    print(json.dumps({"out": str(args.out), "family": card["conventions"]["family"],
                      "parity_max_abs_diff": card["parity_max_abs_diff"],
                      "bytes": {n: (args.out / n).stat().st_size for n in card["files"]}}, indent=1))
