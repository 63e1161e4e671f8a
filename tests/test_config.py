"""Every member of every config group composes and validates; bad values get one clear SvbenchError."""
from pathlib import Path

import pytest

from conftest import pinned
from hydra import compose, initialize_config_dir

from svbench.config import validate
from svbench.errors import SvbenchError
from svbench.runner import run

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in CONF.iterdir()
          if g.is_dir() and g.name not in ("train", "experiment", "hydra")}
# conf/train: the training recipes (own primary configs); conf/experiment: added with +experiment=;
# conf/hydra/launcher: launcher settings (tested in test_sweeps)


def cfg_with(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def method_for(pair: str) -> str:
    """A method whose draft the pair has (target-only pairs like llama3_8b ship an EAGLE head only)."""
    import yaml
    entries = yaml.safe_load((CONF / "pair" / f"{pair}.yaml").read_text())
    return next(m for role, m in (("draft", "vanilla_sd"), ("glide", "glide"), ("eagle", "eagle2"), ("eagle3", "eagle3"))
                if entries.get(role))


@pytest.mark.parametrize("group, member", [(g, m) for g, ms in GROUPS.items() for m in ms])
def test_every_group_member_composes_and_validates(group, member):
    extra = [f"method={method_for(member)}"] if group == "pair" else ["policy=fixed"] if group == "method" else []
    plain = validate(cfg_with(f"{group}={member}", *extra))
    # a file's `name` is the group member, except variants that record as their base method (eagle2_cpu)
    assert plain[group]["name"] == {"eagle2_cpu": "eagle2", "eagle3_cpu": "eagle3"}.get(member, member)


def test_groups_are_complete():
    assert set(GROUPS["method"]) >= {"ar", "vanilla_sd", "glide", "glide_cape", "eagle2"}
    assert set(GROUPS["policy"]) == {"fixed", "heuristic", "confidence", "svip"}
    assert set(GROUPS["benchmark"]) >= {"smoke", "spec_bench", "mt_bench_long"}
    assert set(GROUPS["pair"]) >= {"tiny", "smollm2_layercut", "pythia_6.9b_160m", "qwen2.5_14b_0.5b",
                                   "llama3_70b_8b", "vicuna_7b_68m", "vicuna_7b_v1.5", "vicuna_13b_v1.5",
                                   "vicuna_33b_v1.3", "llama2_chat_7b", "llama3_8b"}


def test_defaults_follow_the_spec():
    cfg = validate(cfg_with())  # the offline default: the best configuration measured on this CPU
    assert cfg["benchmark"]["name"] == "smoke" and cfg["method"]["name"] == "eagle2"
    assert (cfg["policy"]["name"], cfg["dtype"]) == ("svip", "bfloat16")
    assert {k: cfg["method"]["drafter"][k] for k in ("top_k", "depth", "total_token")} == {
        "top_k": 4, "depth": 3, "total_token": 12}
    official = validate(cfg_with("method=eagle2"))["method"]["drafter"]  # the papers' tree: one override away
    assert (official["top_k"], official["depth"], official["total_token"]) == (10, 5, 60)
    svip = validate(cfg_with("policy=svip"))["policy"]
    assert (svip["c"], svip["h"], svip["max_len"]) == (0.15, 0.3, 40)
    spec = validate(cfg_with("benchmark=spec_bench"))
    assert spec["max_new_tokens"] == 1024 and spec["temperature"] == 0.0 and spec["warmup"] == 3
    long = validate(cfg_with("benchmark=mt_bench_long"))
    assert long["temperature"] == 1.0 and long["benchmark"]["ignore_eos"] is True
    assert validate(cfg_with("benchmark=spec_bench", "max_new_tokens=128"))["max_new_tokens"] == 128



@pytest.mark.parametrize("method, gamma", [("vanilla_sd", 5), ("glide", 4), ("glide_cape", 4), ("eagle2", 6), ("ar", 5)])
def test_fixed_policy_defaults_to_the_methods_published_length(method, gamma):
    assert validate(cfg_with(f"method={method}", "policy=fixed"))["policy"]["gamma"] == gamma
    assert validate(cfg_with(f"method={method}", "policy=fixed", "policy.gamma=3"))["policy"]["gamma"] == 3

@pytest.mark.parametrize("overrides, message", [
    (["max_new_tokens=0"], "max_new_tokens=0 must be an integer >= 1"),
    (["max_new_tokens=abc"], "max_new_tokens='abc'"),
    (["temperature=-1"], "temperature=-1"),
    (["top_p=0"], "top_p=0"),
    (["top_k=-3"], "top_k=-3"),
    (["dtype=float8"], "dtype='float8'"),
    (["device=tpu"], "device='tpu'"),
    (["seed=-1"], "seed=-1"),
    (["runs=0"], "runs=0"),
    (["prompt_template=alpaca"], "prompt_template='alpaca'"),
    (["policy=svip", "policy.h=2"], "policy.h=2"),
    (["policy=svip", "policy.c=0"], "policy.c=0"),
    (["policy=fixed", "policy.gamma=0"], "policy.gamma=0"),
    (["policy=fixed", "method.fixed_gamma=0"], "policy.gamma=0"),
    (["policy=confidence", "policy.threshold=1.5"], "policy.threshold=1.5"),
    (["policy=heuristic", "policy.initial=99"], "policy.initial=99"),
    (["benchmark.turns=second"], "benchmark.turns"),
    (["benchmark.ignore_eos=maybe"], "benchmark.ignore_eos='maybe' must be true or false"),
    (["+policy.bogus=1"], "unexpected keyword argument 'bogus'"),
    (["ar_fallback.enabled=maybe"], "ar_fallback.enabled='maybe'"),
    (["ar_fallback.enabled=true", "ar_fallback.pause=0"], "ar_fallback.pause=0"),
    (["ar_fallback.enabled=true", "ar_fallback.alpha=0"], "ar_fallback.alpha=0"),
    (["ar_fallback.enabled=true", "+ar_fallback.bogus=1"], "ar_fallback: .*unexpected keyword argument 'bogus'"),
])
def test_bad_values_are_refused_with_the_key_named(overrides, message):
    with pytest.raises(SvbenchError, match=message.replace("(", "\\(").replace("[", "\\[")):
        validate(cfg_with(*overrides))


def test_ar_fallback_is_attached_and_hashed_only_when_on():
    from svbench.config import build_policy, method_settings

    off, on = validate(cfg_with("policy=svip")), validate(cfg_with("policy=svip", "ar_fallback.enabled=true"))
    assert build_policy(off).ar_fallback is None and build_policy(on).ar_fallback.first_pause == 8
    assert "ar_fallback" not in method_settings(off)  # records made before the switch existed keep their hash
    assert method_settings(on)["ar_fallback"]["enabled"] is True


def test_cuda_requested_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SvbenchError, match="CUDA is not available"):
        validate(cfg_with("device=cuda"))


@pytest.mark.parametrize("overrides, message", [
    (["benchmark.path=/nonexistent/q.jsonl"], "does not exist"),
    (["benchmark=spec_bench", "benchmark.categories=[poetry]"], "unknown \\['poetry'\\]"),
    (["benchmark.limit=0"], "benchmark.limit=0"),
    (["pair=vicuna_7b_68m"], "cannot load target 'lmsys/vicuna-7b-v1.3'.*pair.target.path=DIR"),
    (["pair.target.source=local", "+pair.target.path=/nonexistent"], "pair.target.path='/nonexistent' does not exist"),
    (["method=vanilla_sd", "pair.draft.num_layers=99"], "pair.draft.num_layers=99"),
    (["method=eagle2", "pair.eagle=null"], "needs the pair's `eagle` entry"),
    (["method=glide", "pair.glide.source=s3"], "pair.glide.source='s3'"),
    (["method=glide", "pair.glide.source=local", "+pair.glide.path=/nonexistent"], "pair.glide.path='/nonexistent'"),
    (["method=eagle2", "pair.eagle.source=hub", "+pair.eagle.id=nobody/no-head"], "hf download nobody/no-head"),
    (["method=eagle2", "method.drafter.entropy_aggregate=median"], "entropy_aggregate"),
    (["method=eagle2", "method.drafter.top_k=0"], "top_k=0"),
    (["max_new_tokens=5000"], "max_position_embeddings"),
    (["baseline_records=/nonexistent/*.jsonl"], "no file matches"),
])
def test_bad_inputs_at_run_time(tmp_path, overrides, message):
    with pytest.raises(SvbenchError, match=message):
        run(cfg_with("pair=tiny", "progress=false", *pinned(*overrides), *overrides), tmp_path)


def test_scripts_name_an_unknown_pair_clearly():
    from svbench.config import group_config

    with pytest.raises(SvbenchError, match="pair='nope' is not one of .*'tiny'"):
        group_config("pair", "nope")
    assert group_config("pair", "tiny")["name"] == "tiny"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes_with_its_sweep(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert "policy" in params and cfg.hydra.sweep.dir.startswith(f"results/experiments/{name}/")
    for method in str(params.get("method", cfg.method.name)).split(","):
        for policy in str(params["policy"]).split(","):
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                job = compose(config_name="config", overrides=[f"+experiment={name}", f"method={method}",
                                                               f"policy={policy}"])
            validate(job)


def test_a_drafter_target_that_is_not_a_drafter_is_one_clear_error():
    with pytest.raises(SvbenchError, match="is not a Drafter: it lacks"):
        validate(cfg_with("method=vanilla_sd", "method.drafter._target_=svbench.decoding.tree.DraftTree"))
    with pytest.raises(SvbenchError, match="cannot be imported"):
        validate(cfg_with("method=vanilla_sd", "method.drafter._target_=svbench.nowhere.Nothing"))


def test_glide_mask_context_false_keeps_the_hash_of_records_made_before_the_option():
    """Records made before method.drafter.mask_context existed were unmasked: mask_context=false hashes like
    them (they resume and serve as baselines), the default true does not."""
    from svbench.config import config_hash, method_settings

    def settings(**drafter):
        return method_settings({"method": {"name": "glide", "drafter": {
            "_target_": "svbench.decoding.drafters.glide.GlideDrafter", "cape_bins": None,
            "reencode_accepted": False, **drafter}}, "pair": {"glide": {"path": "g"}}, "policy": {"name": "svip"}})

    before = config_hash(settings())
    assert config_hash(settings(mask_context=False)) == before != config_hash(settings(mask_context=True))


def test_every_committed_run_folder_rehashes_to_its_config_hash():
    """The hash decides which records a run resumes and which AR baseline it reuses: a change to what is hashed
    (config.hashed_settings: generation, hardware, method settings, HASH_NEUTRAL_SETTINGS) must leave the
    committed results' hashes alone. plan() hashes with the same config_hashes."""
    import json
    from pathlib import Path

    from svbench.config import config_hashes

    summaries = sorted((Path(__file__).resolve().parents[1] / "results").rglob("summary.json"))
    assert len(summaries) > 50
    for path in summaries:
        summary = json.loads(path.read_text())
        assert config_hashes(summary["config"], summary["env"])[1] == summary["config_hash"], path


def test_config_difference_names_what_the_hash_covers_and_nothing_else(tmp_path):
    """The refusal to mix configurations in a run folder names the hashed settings that differ (not progress,
    limits or loggers, which a resumed run may change freely) and the hardware."""
    import copy
    import json
    import shutil
    from pathlib import Path

    from svbench.config import config_hashes
    from svbench.runner import config_difference

    source = Path(__file__).resolve().parents[1] / "results/experiments/s15_eagle/smollm2/eagle2-fixed-shipped"
    shutil.copy(source / "summary.json", tmp_path / "summary.json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    old, env = summary["config"], {**summary["env"], "cpu": "new cpu"}
    new = copy.deepcopy(old)
    new.update(progress=not old["progress"], runs=old["runs"] + 1, max_new_tokens=old["max_new_tokens"] // 2,
               threads=4)
    new["benchmark"]["limit"] = 99
    new["policy"]["gamma"] = 9
    diff = config_difference(tmp_path, new, env, [])
    assert diff.startswith(", differs in: ")
    named = sorted(part.split(" (")[0] for part in diff.removeprefix(", differs in: ").split("; "))
    assert named == ["generation.max_new_tokens", "hardware.cpu", "hardware.threads", "method.policy.gamma"], diff
    assert config_hashes(new, env) != config_hashes(old, summary["env"])  # each named key is hashed
    assert config_difference(tmp_path, old, summary["env"], []) == ""
    (tmp_path / "summary.json").write_text("{torn")  # no summary: the last record's hardware
    records = [{"env": {"cpu": "old cpu", "gpu": None}}]
    assert config_difference(tmp_path, new, env, records) == ", differs in: hardware.cpu ('old cpu' -> 'new cpu')"
    assert config_difference(tmp_path, new, env, []) == ""
