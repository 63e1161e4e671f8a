"""StaticKVCache: in place (no copy of the cached rows on the hot path), same numbers as transformers'
DynamicCache, rollback by length, tree-path compaction, growth past the initial capacity."""
import pytest
import torch
from transformers import DynamicCache

from svbench.decoding.kv_cache import StaticKVCache
from svbench.decoding.target import TargetRunner
from svbench.decoding.tree import DraftTree
from svbench.models import tiny_llama


def logits(model, cache, ids, **kwargs):
    return model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True, **kwargs).logits[0]


@torch.inference_mode()
def test_same_logits_as_dynamic_cache_through_appends_and_rollbacks():
    model = tiny_llama(seed=1)
    static, dynamic = StaticKVCache(model.config.num_hidden_layers, capacity=8), DynamicCache(config=model.config)
    steps = [[5, 9, 11, 2, 40, 41], [7], [8, 3, 300], "crop2", [12, 13], [14], "crop1", [15, 16, 17, 18, 19, 20]]
    for step in steps:
        if isinstance(step, str):
            static.crop(-int(step[-1]))
            dynamic.crop(-int(step[-1]))
            continue
        torch.testing.assert_close(logits(model, static, step), logits(model, dynamic, step), rtol=1e-5, atol=1e-5)
        assert static.get_seq_length() == dynamic.get_seq_length()
    assert static.layers[0].capacity >= static.get_seq_length() > 8  # grew past its first capacity


@torch.inference_mode()
def test_appends_and_rollbacks_write_in_place():
    model = tiny_llama(seed=1)
    cache = StaticKVCache(model.config.num_hidden_layers, capacity=64)
    logits(model, cache, list(range(10, 30)))
    pointers = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers]
    prefix = cache.layers[0].keys[:, :, :20].clone()
    for token in range(30, 40):
        logits(model, cache, [token])
        cache.crop(-1) if token % 3 == 0 else None
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers] == pointers
    torch.testing.assert_close(cache.layers[0].keys[:, :, :20], prefix, rtol=0, atol=0)  # never rewritten


@torch.inference_mode()
def test_keep_path_compacts_like_a_concatenation_and_matches_a_fresh_forward():
    """After a tree forward and an off-spine accepted path, the cache equals prefix + root + path, and the next
    forward's logits equal those of an uncached forward over the same tokens."""
    model = tiny_llama(seed=2)
    prompt = [3, 17, 99, 4, 250, 8]
    runner = TargetRunner(model, capacity=8)
    runner.prefill(prompt)
    tree = DraftTree.from_parents([7, 21, 22, 23, 24, 25], [-1, 0, 0, 2, 3, 2])  # paths 2-3-4 and 2-5
    before = [layer.keys.data_ptr() for layer in runner.cache.layers]
    runner.forward_tree(tree)
    runner.keep_path(tree, [2, 3, 4])
    kept = prompt + [7, 22, 23, 24]
    assert runner.cached_len == runner.cache.get_seq_length() == len(kept)
    fresh = DynamicCache(config=model.config)
    expected = logits(model, fresh, kept + [30])[-1]
    got = model.lm_head(runner._run(torch.tensor([[30]]))[0])[0, -1]
    runner.cache.crop(-1)  # _run cached token 30 behind the runner's back: take it out again
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for layer, fresh_layer in zip(runner.cache.layers, fresh.layers):
        torch.testing.assert_close(layer.keys[:, :, : len(kept)], fresh_layer.keys[:, :, : len(kept)],
                                   rtol=1e-5, atol=1e-5)
    # the tree forward outgrew capacity 8 once (prompt 6 + 6 nodes); afterwards the buffers stay put
    after = [layer.keys.data_ptr() for layer in runner.cache.layers]
    runner.forward_tree(DraftTree.from_parents([30, 31, 32], [-1, 0, 0]))
    runner.keep_path(DraftTree.from_parents([30, 31, 32], [-1, 0, 0]), [2])
    assert [layer.keys.data_ptr() for layer in runner.cache.layers] == after and after != before


def test_crop_zero_is_a_no_op():
    model = tiny_llama(seed=1)
    cache = StaticKVCache(model.config.num_hidden_layers)
    with torch.inference_mode():
        logits(model, cache, [5, 6, 7, 8, 9])
    cache.crop(0)
    cache.crop(-0)
    assert cache.get_seq_length() == 5
    cache.crop(-2)
    assert cache.get_seq_length() == 3


def test_one_buffer_for_all_layers_through_growth_keep_and_batch_selection():
    """Every layer's K/V are views of cache.kv; growth keeps every layer's rows; keep() and select_batch()
    move the same rows in every layer as a per-layer copy would."""
    cache = StaticKVCache(3, capacity=4)
    g = torch.Generator().manual_seed(0)
    written = [[torch.randn(2, 2, 0, 8)] * 2 for _ in range(3)]  # per layer: K, V written so far
    for t in (3, 4):  # 3 + 4 > capacity 4: the buffer grows
        for i, layer in enumerate(cache.layers):
            k, v = torch.randn(2, 2, t, 8, generator=g), torch.randn(2, 2, t, 8, generator=g)
            keys, values = layer.update(k, v)
            written[i] = [torch.cat([written[i][0], k], 2), torch.cat([written[i][1], v], 2)]
            assert torch.equal(keys, written[i][0]) and torch.equal(values, written[i][1])
    assert all(layer.keys.data_ptr() == cache.kv[i, 0].data_ptr() for i, layer in enumerate(cache.layers))
    rows = torch.tensor([3, 5])  # keep positions 3 and 5 after the first 3 rows
    cache.keep(3, rows)
    for i, layer in enumerate(cache.layers):
        expected = torch.cat([written[i][0][:, :, :3], written[i][0].index_select(2, rows)], 2)
        assert layer.get_seq_length() == 5 and torch.equal(layer.keys[:, :, :5], expected)
    cache.select_batch(torch.tensor([1]))
    for i, layer in enumerate(cache.layers):
        assert layer.keys.shape[0] == 1 and torch.equal(layer.values[0, :, :3], written[i][1][1, :, :3])


def test_old_transformers_is_refused_with_one_line():
    """transformers < 5.24 swallows `cache=` into **kwargs (the GPU check's machine had 5.17): refuse it."""
    from svbench.decoding.kv_cache import check_transformers, models_take_cache
    with pytest.raises(ImportError, match=r"transformers>=5\.24.*found 5\.17\.0") as err:
        check_transformers(False, "5.17.0")
    assert "\n" not in str(err.value)
    assert models_take_cache()  # the installed version (pinned >= 5.24) passes the probe
    check_transformers(True, "5.24.0.dev0")  # decided by the signature, not the version string
