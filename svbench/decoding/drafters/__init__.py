"""Drafters propose a DraftTree each round. The shared interface (two methods, after transformers'
candidate generators):

    get_candidates(ids, policy, max_len, sampling, generator) -> DraftTree
        ids: every token so far (prompt + emitted); ids[-1] is the root, not yet in the target cache.
        Draft at most max_len tokens, asking policy.should_stop after each one.
    update_candidate_strategy(tree, accepted_path) -> None
        Told which nodes the target accepted (drafters that keep state beyond their cache use it).

plus reset(target) before a new sequence: target is the TargetCache (drafters that read the target's
KV cache or features keep it; others ignore it). A new method is one file here plus one conf/method/*.yaml.
"""
