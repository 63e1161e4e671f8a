"""svbench's EAGLE-2 against the official EAGLE code on identical work: the same target weights, the same
head, the same prompts and the same tree settings (top_k 10, depth 5, 60 nodes; policy fixed, 6 levels).

    python experiments/official_eagle_parity.py --official PATH [--questions 6] [--tokens 128]
        [--dtypes float32 bfloat16] [--out results/official_eagle_parity_smollm2]

PATH: a checkout of SafeAILab/EAGLE (the folder holding ``eagle/model``), e.g. from a git mirror:
``git --git-dir=/work/.mirror/SafeAILab+EAGLE/repo archive HEAD eagle/model | tar x -C PATH``. Nothing of
it is copied into svbench; it is imported from PATH at run time.

What is compared, per prompt (the first turn of one Spec-Bench question per category, greedy, EOS ignored):
- ids: the official output's first ``--tokens`` new tokens vs svbench's (fp32: must be identical);
- accepted-length trace: the official ``evaluate_posterior`` accept_length per round vs svbench's accepted
  depth per round, over the rounds that svbench's token budget did not shorten;
- speed: wall time per round of each (prefill included, one process, alternating official / svbench per
  prompt after a warm-up), and the ratio official / svbench (> 1: svbench is faster).

The head is the shipped EAGLE head over the full vocabulary (``pair.eagle.reduced_vocab=false``): the
official EAGLE-2 code drafts with the target's whole lm_head. Adapting the official code to this
transformers version takes four shims, all outside its logic: its Qwen2/Qwen3 modules (which do not
import under transformers 5) are stubbed, its Llama's ``_tied_weights_keys`` list is emptied (the weights are loaded explicitly),
the base model is built from the target's config with the old-style ``rope_theta`` / ``rope_scaling`` attributes its Llama reads, and the tokenizer it would load
from a hub path is replaced by an object whose EOS id matches nothing (EOS ignored, as in svbench's run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from svbench.benchmarks import build_prompt, load_benchmark  # noqa: E402
from svbench.config import build_drafter, build_policy, group_config, validate  # noqa: E402
from svbench.decoding.drafters import drafter_class  # noqa: E402
from svbench.decoding.loop import generate  # noqa: E402
from svbench.environment import write_result  # noqa: E402
from svbench.models import load_pair  # noqa: E402

TREE = {"top_k": 10, "depth": 5, "total_token": 60}


def import_official(path: Path):
    """The official ea_model module, imported from a checkout (Qwen modules stubbed: see the docstring)."""
    if not (path / "eagle" / "model" / "ea_model.py").is_file():
        sys.exit(f"--official {path}: no eagle/model/ea_model.py there (a SafeAILab/EAGLE checkout is expected)")
    sys.path.insert(0, str(path))
    for name, cls in (("modeling_qwen2_kv", "Qwen2ForCausalLM"), ("modeling_qwen3_kv", "Qwen3ForCausalLM")):
        stub = types.ModuleType(f"eagle.model.{name}")
        setattr(stub, cls, None)
        sys.modules[f"eagle.model.{name}"] = stub
    import eagle.model.ea_model as ea_model  # noqa: E402
    from eagle.model.configs import EConfig
    return ea_model, EConfig


def official_model(ea_model, EConfig, target, head, dtype):
    """An official EaModel (EAGLE-2 head, ``Model1``) holding copies of svbench's target and head weights."""
    config = target.config.__class__.from_dict(target.config.to_dict())
    config.rope_theta = target.config.rope_parameters["rope_theta"]  # the official Llama reads these two
    config.rope_scaling = None
    config.pretraining_tp = 1
    ea_model.KVLlamaForCausalLM._tied_weights_keys = {}  # a list there; transformers 5 wants a mapping
    base = ea_model.KVLlamaForCausalLM(config)  # the weights are loaded below, lm_head included
    missing, unexpected = base.load_state_dict(target.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    base = base.to(dtype).eval()
    head_config = EConfig(**{**config.to_dict(), "num_hidden_layers": head.config.num_hidden_layers})
    head_config.rope_theta, head_config.rope_scaling = config.rope_theta, None
    layer = ea_model.Model1(head_config, bias=head.fc.bias is not None, total_tokens=TREE["total_token"],
                            depth=TREE["depth"], top_k=TREE["top_k"], threshold=1.0, load_emb=False)
    state = {k: v for k, v in head.state_dict().items() if k.startswith(("fc.", "layers."))}
    state["embed_tokens.weight"] = target.model.embed_tokens.weight
    missing, unexpected = layer.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model = ea_model.EaModel.__new__(ea_model.EaModel)  # __init__ would load a tokenizer from a hub path
    torch.nn.Module.__init__(model)
    model.base_model, model.config, model.use_eagle3 = base, base.config, False
    model.hidden_size, model.vocab_size = config.hidden_size, config.vocab_size
    model.tokenizer = types.SimpleNamespace(eos_token_id=-1)  # EOS ignored
    layer.diff_device = False
    model.ea_layer = layer.to(dtype).eval()
    model.ea_layer.init_tree()
    return model


def run_official(ea_model, model, prompt, tokens, max_length):
    """(new ids, accept lengths per round, wall s). max_length: the same for every call (the official model
    allocates its KV cache at the first call and keeps it)."""
    accepts = []
    original = ea_model.evaluate_posterior

    def recording(*args, **kwargs):
        best, accept_length, sample_p = original(*args, **kwargs)
        accepts.append(int(accept_length))
        return best, accept_length, sample_p

    ea_model.evaluate_posterior = recording
    try:
        input_ids = torch.tensor([prompt])
        start = time.perf_counter()
        out = model.eagenerate(input_ids, temperature=0.0, max_new_tokens=tokens, max_length=max_length)
        wall = time.perf_counter() - start
    finally:
        ea_model.evaluate_posterior = original
    return out[0, len(prompt):].tolist(), accepts, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, type=Path, help="a SafeAILab/EAGLE checkout (holds eagle/model)")
    ap.add_argument("--questions", type=int, default=6, help="first turns: the first question of each category")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--out", default=str(REPO / "results" / "official_eagle_parity_smollm2"))
    args = ap.parse_args()
    ea_model, EConfig = import_official(args.official.resolve())
    torch.set_num_threads(2)
    spec = group_config("benchmark", "spec_bench")
    questions = load_benchmark({**spec, "limit": 1, "turns": "first"})[: args.questions]
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            c = validate(compose(config_name="config", overrides=[
                "method=eagle2", "policy=fixed", "policy.gamma=6", "pair=smollm2", f"dtype={dtype_name}",
                "+pair.eagle.reduced_vocab=false", *[f"method.drafter.{k}={v}" for k, v in TREE.items()]]))
        pair = load_pair(c["pair"], dtype_name, "cpu", drafter_cls=drafter_class(c["method"]))
        drafter, policy = build_drafter(c, pair), build_policy(c)
        official = official_model(ea_model, EConfig, pair.target, pair.network, dtype)
        prompts = [build_prompt(pair.tokenizer, "chat", [q.turns[0]], []) for q in questions]
        max_length = max(map(len, prompts)) + args.tokens + 200  # the official loop may overshoot the budget
        generate(pair.target, prompts[0], 16, drafter, policy, eos_ids=())  # warm-up, both
        run_official(ea_model, official, prompts[0], 16, max_length)
        for q, prompt in zip(questions, prompts):
            o_ids, o_accepts, o_wall = run_official(ea_model, official, prompt, args.tokens, max_length)
            s = generate(pair.target, prompt, args.tokens, drafter, policy, eos_ids=())
            s_accepts = [r.accepted for r in s.rounds[1:]]
            emitted, full = 1, 0  # rounds whose drafting the budget did not cut (6 levels fit)
            for a in s_accepts:
                if args.tokens - emitted - 1 < 6:
                    break
                emitted, full = emitted + a + 1, full + 1
            rows.append({"dtype": dtype_name, "question": q.question_id, "category": q.category,
                         "ids_identical": o_ids[: args.tokens] == s.ids,
                         "first_diff": next((i for i, (a, b) in enumerate(zip(o_ids, s.ids)) if a != b), None),
                         "rounds_compared": full, "trace_identical": o_accepts[:full] == s_accepts[:full],
                         "official_rounds": len(o_accepts), "svbench_rounds": len(s_accepts),
                         "official_tau": sum(a + 1 for a in o_accepts[:full]) / full,  # compared rounds
                         "svbench_tau": sum(a + 1 for a in s_accepts[:full]) / full,
                         "official_ms_per_round": 1e3 * o_wall / len(o_accepts),
                         "svbench_ms_per_round": 1e3 * s.wall_time / len(s_accepts)})
            rows[-1]["ratio"] = rows[-1]["official_ms_per_round"] / rows[-1]["svbench_ms_per_round"]
            print(json.dumps(rows[-1]), file=sys.stderr)
    command = "python experiments/official_eagle_parity.py " + " ".join(sys.argv[1:])
    lines = ["# svbench's EAGLE-2 vs the official EAGLE code, identical work (SmolLM2-135M, shipped head, full vocabulary)",
             "", f"Command: `{command.strip()}`. Official tree (top_k 10, depth 5, 60 nodes), policy fixed (6 levels), "
             f"greedy, EOS ignored, {len(questions)} Spec-Bench first turns x {args.tokens} new tokens, 2 threads, "
             "CPU. ms/round: wall time of a whole generation (prefill included) / rounds; ratio = official / "
             "svbench (> 1: svbench faster).", "",
             "| dtype | prompts | ids identical | traces identical (rounds compared) | tau official / svbench (compared rounds) | "
             "ms/round official | ms/round svbench | ratio median [min, max] |", "|---|---|---|---|---|---|---|---|"]
    for dtype_name in args.dtypes:
        r = [x for x in rows if x["dtype"] == dtype_name]
        med = lambda key: statistics.median(x[key] for x in r)  # noqa: E731
        lines.append(f"| {dtype_name} | {len(r)} | {sum(x['ids_identical'] for x in r)}/{len(r)} | "
                     f"{sum(x['trace_identical'] for x in r)}/{len(r)} ({sum(x['rounds_compared'] for x in r)}) | "
                     f"{med('official_tau'):.2f} / {med('svbench_tau'):.2f} | {med('official_ms_per_round'):.1f} | "
                     f"{med('svbench_ms_per_round'):.1f} | {med('ratio'):.2f} [{min(x['ratio'] for x in r):.2f}, "
                     f"{max(x['ratio'] for x in r):.2f}] |")
    lines += ["", "In bf16 the two implementations may round differently (different attention and matmul "
              "kernels), so ids and traces can part after a near-tie; fp32 is the parity check."]
    write_result(args.out, lines, command, rows)


if __name__ == "__main__":
    main()
