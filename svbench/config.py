"""Check a composed config before anything heavy runs, and derive the hashes that identify results."""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from svbench.attention import CHOICES as ATTENTION_CHOICES
from svbench.linear import CHOICES as LINEAR_CHOICES
from svbench.benchmarks import PROMPT_TEMPLATES
from svbench.decoding.drafters import drafter_class
from svbench.decoding.policies import ArFallback
from svbench.errors import SvbenchError
from svbench.models import DTYPES, resolve_device


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def group_config(group: str, name: str) -> dict:
    """conf/<group>/<name>.yaml as a plain dict (for the scripts that are not Hydra apps)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise SvbenchError(f"{group}={name!r} is not one of {known}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def to_container(cfg) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as exc:
        raise SvbenchError(f"config: {str(exc).splitlines()[0]}") from None


def _int(cfg: dict, key: str, low: int, allow_none=False):
    value = cfg.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SvbenchError(f"{key}={value!r} must be an integer >= {low}" + (" or null" if allow_none else ""))


def _number(cfg: dict, key: str, low: float, high: float, low_open=False):
    value = cfg.get(key)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)
    if not ok or value < low or value > high or (low_open and value == low):
        raise SvbenchError(f"{key}={value!r} must be a number in {'(' if low_open else '['}{low}, {high}]")


def validate(cfg) -> dict:
    """Return the config as a plain dict, or raise SvbenchError naming the first bad key."""
    c = to_container(cfg)
    _int(c, "max_new_tokens", 1)
    _number(c, "temperature", 0.0, 100.0)
    _int(c, "top_k", 0)
    _number(c, "top_p", 0.0, 1.0, low_open=True)
    _int(c, "seed", 0)
    _int(c, "runs", 1)
    _int(c, "warmup", 0)
    _int(c, "warmup_tokens", 1)
    _int(c, "threads", 1, allow_none=True)
    if c["dtype"] not in DTYPES:
        raise SvbenchError(f"dtype={c['dtype']!r} is not one of {sorted(DTYPES)}")
    resolve_device(str(c["device"]))
    if c["attention"] not in ATTENTION_CHOICES:
        raise SvbenchError(f"attention={c['attention']!r} must be one of {ATTENTION_CHOICES}")
    linear = c.setdefault("linear", "plain")  # configs written before the option have none
    if linear not in LINEAR_CHOICES:
        raise SvbenchError(f"linear={linear!r} must be one of {LINEAR_CHOICES}")
    if linear == "onednn" and (c["dtype"] != "bfloat16" or resolve_device(str(c["device"])).type != "cpu"):
        raise SvbenchError(f"linear=onednn applies to bfloat16 on a CPU (dtype={c['dtype']}, device={c['device']}); "
                           f"use linear=plain")
    if c["prompt_template"] not in PROMPT_TEMPLATES:
        raise SvbenchError(f"prompt_template={c['prompt_template']!r} is not one of {list(PROMPT_TEMPLATES)}")
    if c["benchmark"].get("turns", "all") not in ("all", "first"):
        raise SvbenchError(f"benchmark.turns={c['benchmark']['turns']!r} must be 'all' or 'first'")
    if not isinstance(c["benchmark"].get("ignore_eos"), bool):
        raise SvbenchError(f"benchmark.ignore_eos={c['benchmark'].get('ignore_eos')!r} must be true or false")
    if isinstance(c.get("baseline_records"), str):
        c["baseline_records"] = [c["baseline_records"]]
    if not isinstance(c.get("baseline_records") or [], list) or \
            not all(isinstance(x, str) for x in c.get("baseline_records") or []):
        raise SvbenchError(f"baseline_records={c.get('baseline_records')!r} must be a list of records.jsonl paths/globs")
    if c.get("logger") not in (None, "wandb"):
        raise SvbenchError(f"logger={c.get('logger')!r} must be null or wandb")
    cls = drafter_class(c["method"])
    role = getattr(cls, "network", None)
    if role and not c["pair"].get(role):
        raise SvbenchError(f"method={c['method']['name']} needs the pair's `{role}` entry, which "
                           f"pair={c['pair'].get('name')} does not have")
    policy = build_policy(c)  # checks the policy's parameters
    if cls is not None and policy.needs_draft_distribution and not cls.draft_distribution:
        raise SvbenchError(f"policy={policy.name} needs a draft distribution (entropy / probability per drafted "
                           f"token), which method={c['method']['name']} does not have; use policy=fixed or heuristic")
    return c


def locate(path, key, getter=get_class):
    """Import ``path`` (a class by default) or raise one SvbenchError naming ``key``."""
    try:
        return getter(path)
    except Exception:  # hydra raises ImportError/ValueError variants here
        raise SvbenchError(f"{key}={path!r} cannot be imported") from None


def build_policy(c: dict):
    """The policy object of a validated config (None for the AR baseline)."""
    if c["method"]["name"] == "ar":
        return None
    params = {k: v for k, v in c["policy"].items() if k not in ("name", "_target_")}
    cls = locate(c["policy"].get("_target_"), "policy._target_")
    try:
        policy = cls(**params)
    except TypeError as exc:
        raise SvbenchError(f"policy={c['policy'].get('name')}: {exc}") from None
    fallback = dict(c.get("ar_fallback") or {"enabled": False})
    if not isinstance(fallback.get("enabled"), bool):
        raise SvbenchError(f"ar_fallback.enabled={fallback.get('enabled')!r} must be true or false")
    if fallback.pop("enabled"):
        try:
            policy.ar_fallback = ArFallback(**fallback)
        except TypeError as exc:
            raise SvbenchError(f"ar_fallback: {exc}") from None
    return policy


def build_drafter(c: dict, pair):
    """The method's drafter over a loaded pair (None for the AR baseline): ``cls.from_pair(pair, **params)``."""
    cls = drafter_class(c["method"])
    if cls is None:
        return None
    params = {k: v for k, v in c["method"]["drafter"].items() if k != "_target_"}
    try:
        return cls.from_pair(pair, **params)
    except TypeError as exc:
        raise SvbenchError(f"method={c['method']['name']}: {exc}") from None


def config_hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def generation_settings(c: dict) -> dict:
    """Everything that changes the AR baseline's output or speed (the draft does not)."""
    bench = c["benchmark"]
    return {
        "target": c["pair"]["target"], "dtype": c["dtype"], "device": c["device"], "attention": c["attention"],
        "temperature": c["temperature"], "top_k": c["top_k"], "top_p": c["top_p"],
        "max_new_tokens": c["max_new_tokens"], "prompt_template": c["prompt_template"],
        "ignore_eos": bench["ignore_eos"], "benchmark_file": [bench.get("path"), bench.get("file")],
        # linear: only when not the default, so that the hashes of runs made before the option stay the same
        **({"linear": c["linear"]} if c.get("linear", "plain") != "plain" else {}),
    }


def hashed_settings(c: dict, env: dict) -> dict:
    """Everything a run's config hash covers, by part: generation (what changes AR's output or speed), hardware
    (an AR baseline is reused only on the same cpu, gpu and threads; null threads, the machine's default, is left
    out so records made before threads= existed keep their hash) and, except for AR, method (method_settings)."""
    hardware = {"cpu": env["cpu"], "gpu": env["gpu"], **({"threads": c["threads"]} if c.get("threads") else {})}
    parts = {"generation": generation_settings(c), "hardware": hardware}
    if c["method"].get("drafter") is not None:
        parts["method"] = method_settings(c)
    return parts


def config_hashes(c: dict, env: dict) -> tuple[str, str]:
    """(the AR baseline's hash, this run's hash): records are resumed and AR baselines reused by these."""
    parts = hashed_settings(c, env)
    ar_hash = config_hash(parts["generation"], parts["hardware"])
    return ar_hash, config_hash(parts["generation"], parts["hardware"], parts["method"]) if "method" in parts else ar_hash


# Settings added after committed records existed. At the value that reproduces the old behaviour each is left
# out of the hash, so those records still resume and serve as baselines: (path in method_settings, is_old).
HASH_NEUTRAL_SETTINGS = [
    (("method", "drafter", "mask_context"), lambda v: v is False),  # GliDe before its inference cross mask
    (("ar_fallback",), lambda v: not (v or {}).get("enabled")),      # runs before the AR fallback existed
]


def method_settings(c: dict) -> dict:
    """What a method's records are hashed by, beyond generation_settings: its network, method and policy."""
    if c["method"]["name"] == "ar":
        return {}
    if c.get("logger") not in (None, "wandb"):
        raise SvbenchError(f"logger={c.get('logger')!r} must be null or wandb")
    role = getattr(drafter_class(c["method"]), "network", None)
    settings = copy.deepcopy({role or "network": c["pair"].get(role) if role else None, "method": c["method"],
                              "policy": c["policy"], "ar_fallback": c.get("ar_fallback")})
    for path, is_old in HASH_NEUTRAL_SETTINGS:
        *parents, key = path
        node = settings
        for name in parents:
            node = node.get(name) or {}
        if key in node and is_old(node[key]):
            del node[key]
    return settings
