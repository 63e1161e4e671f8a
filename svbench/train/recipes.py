"""What is trained, one class per draft kind, all with one interface used by the loop in __main__.py:

    recipe = Recipe(cfg, target, vocab)     builds recipe.module from the frozen target
    recipe.loss(ids, attention, answer)     -> (loss, top1 agreement with the target, tokens)
    recipe.export(folder)                   writes the shipped format (bf16 safetensors + config)

ids (B, T) right-padded, attention (B, T) 1 on real tokens, answer (B, T) True where the target wrote the
token. The target never trains. GliDe and EAGLE need the target's K/V or features for every training
sequence: computed once per row on first use and kept in memory (bf16), so later epochs cost only the
draft's own forward/backward.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from svbench.decoding.verify import row_argmax
from svbench.draft_lm import draft_from_target, load_draft, save_draft
from svbench.errors import SvbenchError
from svbench.nets.common import additive_mask, vocab_mask, vocab_rows
from svbench.nets.eagle import head_from_target, load_head, save_head
from svbench.nets.eagle3 import eagle3_from_target, save_eagle3
from svbench.nets.glide import glide_from_target, save_glide


def init_from_folder(cfg):
    """The folder cfg.init_from names (a draft to start training from), None when unset; one error line when
    it is not a folder."""
    from svbench.models import resolve_folder
    return resolve_folder(cfg.init_from, key="init_from") if cfg.get("init_from") else None


def target_distribution(hidden: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """(M, d) target features, (N, d) output rows -> (M, N) the target's next-token distribution over those
    rows, float32 (the soft labels; no gradient reaches the target)."""
    return F.softmax((hidden.to(head.dtype) @ head.T).float(), -1)


class _RowCrossEntropy(torch.autograd.Function):
    """Per row -sum_v p(v) log q(v), q = softmax(d), in float32: forward keeps only log q; backward writes
    (q - p) * g into that tensor in place (d/dd of the row = q - p). One (M, N) tensor less than autograd's
    log_softmax, mul, sum chain, and ~2x faster on a CPU (M 2,000 x N 16,384, forward + backward: 0.15 s against
    0.30 s; python experiments/soft_ce_speed.py, results/soft_ce_speed_s27.md)."""

    @staticmethod
    def forward(ctx, draft_logits, target_probs):
        log_q = F.log_softmax(draft_logits.float(), -1)  # (M, N)
        ctx.save_for_backward(log_q, target_probs)
        ctx.dtype = draft_logits.dtype
        return -(target_probs * log_q).sum(-1)  # (M,)

    @staticmethod
    @once_differentiable  # no second-order graph through the in-place backward
    def backward(ctx, grad_rows):
        log_q, target_probs = ctx.saved_tensors
        grad = log_q.exp_().sub_(target_probs).mul_(grad_rows[:, None])  # (q - p) * g: (M, N), in place
        return grad.to(ctx.dtype), None


def soft_cross_entropy(draft_logits: torch.Tensor, target_probs: torch.Tensor,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
    """-sum_v p(v) log q(v) per row (KL(p || q) + H(p)), averaged over the rows where keep (M,) is True (all
    rows when None). draft_logits (M, N), target_probs p (M, N) float32 (no gradient). Float32 whatever the
    autocast; rows selected with torch.where rather than gathered (no copy of the (M, N) logits; a non-finite
    dropped row stays out). No kept row gives 0, still in the graph."""
    if draft_logits.shape[0] == 0:
        return draft_logits.float().sum()  # 0, still in the graph
    with torch.autocast(draft_logits.device.type, enabled=False):
        rows = _RowCrossEntropy.apply(draft_logits, target_probs.float())  # (M,)
    if keep is None:
        return rows.mean()
    return torch.where(keep, rows, 0.0).sum() / keep.sum().clamp(min=1)


def vocab_membership(cfg, target, vocab) -> torch.Tensor | None:
    """(V,) True on the draft vocabulary's tokens, when cfg asks to skip the soft CE at positions whose target
    top-1 lies outside it (mask_outside_vocab, as EAGLE-3's training does); else None (soft labels renormalised
    to the draft vocabulary everywhere)."""
    if vocab is None or not cfg.get("mask_outside_vocab", False):
        return None
    return vocab_mask(target.lm_head.weight.shape[0], vocab)


def agreement(draft_logits: torch.Tensor, target_probs: torch.Tensor) -> float:
    """The fraction of rows where the draft's top-1 is the target's, (M, N) each (row_argmax: vectorised, exact)."""
    if not len(draft_logits):
        return 0.0
    return float((row_argmax(draft_logits.detach()) == row_argmax(target_probs)).float().mean())


class DraftLMRecipe:
    """Vanilla-SD draft LM: a few target-width layers. Loss: soft cross-entropy to the target's next-token
    distribution at every answer position (soft_labels, the default; over the reduced vocabulary the
    target's distribution is renormalised to it, or with mask_outside_vocab the positions whose target top-1
    lies outside it are skipped), else cross-entropy on the answer tokens."""

    def __init__(self, cfg, target, vocab):
        self.module = draft_from_target(target, cfg.num_layers, list(cfg.init_layers))
        self.vocab = vocab
        full = self.module.lm_head.weight
        self.head = vocab_rows(full.detach(), vocab)  # (N, d); the head is frozen
        self.to_index = None
        if vocab is not None:  # full id -> subset index, -100 (ignored) outside the subset
            self.to_index = torch.full((full.shape[0],), -100, dtype=torch.long)
            self.to_index[torch.tensor(vocab)] = torch.arange(len(vocab))
        self.target_pass = TargetPass(target, max_tokens=cfg.get("feature_cache_tokens"),
                                      vocab_member=vocab_membership(cfg, target, vocab)) \
            if cfg.get("soft_labels", True) else None
        full_target = target.lm_head.weight.detach()  # frozen: the soft labels carry no gradient
        self.target_head = vocab_rows(full_target, vocab)  # (N, d)

    def loss(self, ids, attention, answer, keys=None):
        where = answer[:, 1:]  # positions t whose next token x_{t+1} the target wrote
        hidden = self.module.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, d)
        logits = hidden[:, :-1][where] @ self.head.T  # (M, N); soft_cross_entropy works in float32 itself
        if self.target_pass is not None:
            features, _, _, inside = self.target_pass.batch(keys, ids, attention)  # (B, T, d), (B, T) or None
            probs = target_distribution(features[:, :-1][where], self.target_head)  # (M, N)
            keep = None if inside is None else inside[:, :-1][where]  # (M,)
            return soft_cross_entropy(logits, probs, keep), agreement(logits, probs), int(where.sum())
        labels = ids[:, 1:][where]  # (M,) the next token at every answer position
        if self.to_index is not None:
            labels = self.to_index[labels]
        loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)
        valid = labels >= 0
        acc = float((logits.argmax(-1)[valid] == labels[valid]).float().mean()) if valid.any() else 0.0
        return loss, acc, int(labels.numel())

    def export(self, folder):
        save_draft(self.module.eval(), folder, self.vocab)


class TargetPass:
    """The frozen target's outputs per training row, computed on first use: final-normed hidden states
    (T, d); for GliDe the K/V of the given layers (kv_heads, T, head_dim) each; for EAGLE-3 the hidden
    states of ``feature_layers`` concatenated (T, 3d); with ``vocab_member`` (V,) whether the target's
    top-1 at each position lies in the draft vocabulary (T,). bf16 in memory, up to max_tokens tokens (rows
    past that are recomputed each time they are drawn). The top-1 costs one float32 full-vocabulary lm_head
    product per row whenever the row is computed, nothing when it comes from memory."""

    def __init__(self, target, kv_layers: list[int] = (), max_tokens: int | None = None,
                 feature_layers: list[int] | None = None, vocab_member: torch.Tensor | None = None):
        self.target, self.kv_layers, self.feature_layers, self.rows = target, list(kv_layers), feature_layers, {}
        self.max_tokens, self.cached_tokens, self.vocab_member = max_tokens, 0, vocab_member

    @torch.no_grad()
    def batch(self, keys: list, ids, attention):
        """(hidden (B, T, d), kv per layer ((B, kv_heads, T, hd), same), fused (B, T, 3d) or None,
        inside (B, T) bool or None: the target's top-1 is in the draft vocabulary; False on padding),
        zero-padded."""
        rows = dict(self.rows)
        todo = [b for b, key in enumerate(keys) if key not in rows]
        if todo:
            out = self.target.model(input_ids=ids[todo], attention_mask=attention[todo], use_cache=bool(self.kv_layers),
                                    output_hidden_states=self.feature_layers is not None)
            for j, b in enumerate(todo):
                n = int(attention[b].sum())
                kv = [(out.cache.layers[i].keys[j, :, :n].to(torch.bfloat16),
                       out.cache.layers[i].values[j, :, :n].to(torch.bfloat16)) for i in self.kv_layers]
                fused = None if self.feature_layers is None else \
                    torch.cat([out.hidden_states[i][j, :n] for i in self.feature_layers], -1).to(torch.bfloat16)
                inside = None
                if self.vocab_member is not None:  # the target's own logits, in float32 even under autocast
                    with torch.autocast(out.last_hidden_state.device.type, enabled=False):
                        logits = out.last_hidden_state[j, :n].float() @ self.target.lm_head.weight.float().T  # (n, V)
                    inside = self.vocab_member[row_argmax(logits)]  # (n,) its top-1 is in the draft vocabulary
                rows[keys[b]] = (out.last_hidden_state[j, :n].to(torch.bfloat16), kv, fused, inside)
                if self.max_tokens is None or self.cached_tokens + n <= self.max_tokens:
                    self.rows[keys[b]] = rows[keys[b]]
                    self.cached_tokens += n
        T = ids.shape[1]

        def padded(t):  # (n, ...) or (heads, n, hd) -> padded to T on the token axis
            axis = 0 if t.dim() == 2 else 1
            pad = [0, 0] * (t.dim() - 1 - axis) + [0, T - t.shape[axis]]
            return F.pad(t, pad)

        hidden = torch.stack([padded(rows[k][0]) for k in keys])  # (B, T, d)
        kv = [(torch.stack([padded(rows[k][1][i][0]) for k in keys]),  # (B, kv_heads, T, hd)
               torch.stack([padded(rows[k][1][i][1]) for k in keys])) for i in range(len(self.kv_layers))]
        fused = None if self.feature_layers is None else torch.stack([padded(rows[k][2]) for k in keys])  # (B, T, 3d)
        inside = None
        if self.vocab_member is not None:
            inside = torch.zeros(len(keys), T, dtype=torch.bool)  # (B, T) False on padding
            for b, k in enumerate(keys):
                inside[b, : len(rows[k][3])] = rows[k][3]
        return hidden, kv, fused, inside


def block_mask(T: int, block: int, dtype) -> torch.Tensor:
    """Additive (1, 1, T, T) GliDe training mask: a query in block b = t // block sees target K/V of earlier
    blocks only (imitating a target cache that stops at the round's root). Queries in block 0 see key 0
    (a fully masked row would give NaN; these are prompt positions, outside the loss)."""
    blocks = torch.arange(T) // block
    allowed = blocks[None, :] < blocks[:, None]  # (T, T) [query, key]
    allowed[:block, 0] = True
    return additive_mask(allowed, dtype)  # (1, 1, T, T)


class GlideRecipe:
    """GliDe draft: soft CE to the target's next-token distribution, stale-cache block mask (ALGORITHMS §3);
    mask_outside_vocab as for the draft LM."""

    def __init__(self, cfg, target, vocab):
        folder = init_from_folder(cfg)  # a trained draft LM folder: start from its layers
        lm = None if folder is None else load_draft(folder, target)
        self.module = glide_from_target(target, cfg.num_layers, vocab, lm)
        if cfg.get("train_only_cross_attention"):  # keep the (trained) LM part fixed; learn what to read
            for name, param in self.module.named_parameters():
                param.requires_grad_(".cross_attn." in name)
        self.block = int(cfg.block_size)
        self.target_pass = TargetPass(target, self.module.target_layers(),
                                      vocab_member=vocab_membership(cfg, target, vocab))

    def loss(self, ids, attention, answer, keys=None):
        features, kv, _, inside = self.target_pass.batch(keys, ids, attention)
        B, T = ids.shape
        dtype = self.module.model.norm.weight.dtype
        positions = torch.arange(T)[None].expand(B, T)
        hidden = self.module(ids, positions, kv, cross_mask=block_mask(T, self.block, torch.float32).to(dtype))
        where = answer[:, 1:]  # positions t whose next token x_{t+1} the target wrote
        draft_logits = self.module.logits(hidden[:, :-1][where])  # (M, N)
        probs = target_distribution(features[:, :-1][where], self.module.head_weight)  # (M, N)
        keep = None if inside is None else inside[:, :-1][where]  # (M,)
        return soft_cross_entropy(draft_logits, probs, keep), agreement(draft_logits, probs), int(where.sum())

    def export(self, folder):
        save_glide(self.module.eval(), folder)


def shifted(x: torch.Tensor, j: int) -> torch.Tensor:
    """x (B, n, ...) moved j positions left along dim 1, zero-filled at the end: out[:, t] = x[:, t + j]."""
    return x if j == 0 else torch.cat([x[:, j:], torch.zeros_like(x[:, :j])], dim=1)


def training_time_test_mask(n: int, step: int, device=None) -> torch.Tensor:
    """Boolean (1, 1, n, n * (step + 1)) mask for unrolled draft step `step` >= 1 (True = attend): query t
    sees the step-0 keys s <= t (the context built from the target's features) and, of every later step's
    keys, only its own position t (its draft path's earlier nodes), as a tree draft at depth `step` does."""
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (n, n)
    own = torch.eye(n, dtype=torch.bool, device=device)
    return torch.cat([causal] + [own] * step, dim=1)[None, None]


def unrolled_head(head, next_tokens, features, steps: int):
    """The EAGLE head unrolled `steps` draft steps over every position at once (training-time test).
    next_tokens (B, n) = x_{t+1}; features (B, n, d) = f_t. Yields step j's output (B, n, d): at position t,
    f^_{t+j+1}, the head's feature after drafting j tokens past x_{t+1}, reading f_0..f_t and its own j
    earlier outputs at t exactly as tree drafting at depth j does (tests/test_train.py checks this)."""
    from transformers import DynamicCache

    B, n = next_tokens.shape
    cache = DynamicCache() if steps > 1 else None  # step j's keys follow step j-1's: (B, kv, n * (j + 1), hd)
    for j in range(steps):
        tokens = shifted(next_tokens, j)  # x_{t+j+1} at t
        positions = (torch.arange(n, device=next_tokens.device) + j)[None].expand(B, n)  # the draft node's position
        mask = None if j == 0 else training_time_test_mask(n, j, next_tokens.device)
        features = head(tokens, features, positions, attention_mask=mask, cache=cache)  # the next step's input
        yield features


class UnrolledSoftLabels:
    """The target's next-token distribution at every position the target wrote, computed once per batch and
    shared by the unrolled steps (step j's rows are those positions shifted by j, so steps 1.. cost a gather,
    not a product and a softmax). hidden (B, n, d): the target's features at positions 1..T-1; answered
    (B, n): answer[:, 1:]; inside (B, n) or None: answer[:, 1:]'s mask_outside_vocab flags."""

    def __init__(self, hidden, answered, head, inside=None):
        self.probs = target_distribution(hidden[answered], head)  # (M, N)
        self.row = torch.full(answered.shape, -1, dtype=torch.long, device=answered.device)  # (B, n) row or -1
        self.row[answered] = torch.arange(self.probs.shape[0], device=answered.device)
        self.inside = None if inside is None else inside[answered]  # (M,)

    def step(self, j: int, where):
        """(probs (M_j, N), keep (M_j,) or None) for step j's rows, where = shifted(answered, j)."""
        rows = shifted(self.row, j)[where]  # (M_j,) every one >= 0
        probs = self.probs if j == 0 else self.probs.index_select(0, rows)
        return probs, None if self.inside is None else self.inside[rows]


def training_time_test_loss(head, next_tokens, inputs, answer, steps: int, decay: float, step_loss):
    """sum_j decay ** j * loss_j over the unrolled steps (unrolled_head), loss_j only at the positions whose
    predicted token x_{t+j+2} lies in the answer. step_loss(j, predicted (M_j, d), where (B, n)) returns
    (loss_j, draft_logits, target_probs). Returns (total, step 0's top-1 agreement, step 0's positions)."""
    total, first = 0.0, None
    for j, predicted in enumerate(unrolled_head(head, next_tokens, inputs, steps)):  # f^_{t+j+1}: (B, n, d)
        where = shifted(answer[:, 1:], j)  # the target wrote x_{t+j+2}'s context position t+j+1
        loss, draft_logits, target_probs = step_loss(j, predicted[where], where)
        total = total + decay ** j * loss
        if j == 0:
            first = (agreement(draft_logits, target_probs), int(where.sum()))
    return total, first[0], first[1]


def eagle_head_from_folder(cfg, folder, target, vocab):
    """The EAGLE head in folder (cfg.init_from), to train further: it must have cfg.num_layers layers and this
    run's drafting vocabulary (the same data gives the same one), else one error line."""
    head = load_head(folder, target).to(target.dtype)
    if head.config.num_hidden_layers != cfg.num_layers:
        raise SvbenchError(f"init_from={cfg.init_from}: the head has {head.config.num_hidden_layers} layer(s), "
                           f"num_layers={cfg.num_layers}")
    if (None if vocab is None else list(vocab)) != head.vocab_ids:
        raise SvbenchError(f"init_from={cfg.init_from}: its drafting vocabulary differs from this run's "
                           f"(reduced_vocab={cfg.get('reduced_vocab')} over {list(cfg.data)})")
    return head


class EagleRecipe:
    """EAGLE head. Step 0 is EAGLE-1's recipe: SmoothL1(f^_{t+1}, f_{t+1}) + w * soft CE(lm_head), uniform
    noise on the input features (ALGORITHMS §5). Training-time test (ttt_steps > 1, HASS / EAGLE-3): the
    head is unrolled on its own outputs, step j reading f^ from step j-1 with token x_{t+j+1} at position
    t + j and attending to the step-0 context plus its own path (training_time_test_mask); step j's loss
    is weighted ttt_decay ** j (EAGLE-3: 0.8). With mask_outside_vocab the soft CE skips positions whose target
    top-1 lies outside the draft vocabulary (EAGLE-3's rule; off by default, as the shipped head was trained)."""

    def __init__(self, cfg, target, vocab):
        folder = init_from_folder(cfg)
        if folder is not None:  # a trained head folder: go on training it (a new cosine, this run's lr)
            self.module = eagle_head_from_folder(cfg, folder, target, vocab)
        else:
            init = cfg.init_layer if cfg.init_layer is None or cfg.init_layer >= 0 else \
                target.config.num_hidden_layers + cfg.init_layer
            self.module = head_from_target(target, init_layer=init, vocab_ids=vocab, num_layers=cfg.num_layers)
        self.noise, self.ce_weight = float(cfg.feature_noise), float(cfg.ce_weight)
        self.steps, self.decay = int(cfg.get("ttt_steps", 1)), float(cfg.get("ttt_decay", 0.8))
        self.target_pass = TargetPass(target, max_tokens=cfg.get("feature_cache_tokens"),
                                      vocab_member=vocab_membership(cfg, target, vocab))

    def loss(self, ids, attention, answer, keys=None):
        features, _, _, inside = self.target_pass.batch(keys, ids, attention)
        features = features.float()  # (B, T, d)
        inputs = features[:, :-1]  # f_t, t = 0..T-2
        if self.noise and self.module.training:
            inputs = inputs + (torch.rand_like(inputs) - 0.5) * 2 * self.noise  # U(-noise, noise)
        head = self.module.head_weight.float()
        labels = UnrolledSoftLabels(features[:, 1:], answer[:, 1:], head, None if inside is None else inside[:, 1:])

        def step_loss(j, predicted, where):
            pred, true = predicted.float(), shifted(features[:, 1:], j)[where]  # f^_{t+j+1}, f_{t+j+1}: (M_j, d)
            probs, keep = labels.step(j, where)  # (M_j, N), (M_j,) or None
            draft_logits = pred @ head.T  # (M_j, N)
            ce = soft_cross_entropy(draft_logits, probs, keep)  # the feature loss keeps every position
            return F.smooth_l1_loss(pred, true) + self.ce_weight * ce, draft_logits, probs

        return training_time_test_loss(self.module, ids[:, 1:], inputs, answer, self.steps, self.decay, step_loss)

    def export(self, folder):
        save_head(self.module.eval(), folder)


class Eagle3Recipe:
    """EAGLE-3 head (svbench.nets.eagle3), as the official training (eagle/traineagle3): the target's three
    feature layers fused by the head's FC at step 0, then ttt_steps - 1 steps on the head's own outputs
    (unrolled_head); each step's loss is the soft cross-entropy to the target's next-token distribution
    over the draft vocabulary, weighted ttt_decay ** j. No feature regression. The official loss also skips
    positions whose target top-1 token lies outside the draft vocabulary: here only with mask_outside_vocab
    (off by default, as the shipped heads were trained; TargetPass finds the target's top-1 once per row)."""

    def __init__(self, cfg, target, vocab):
        if cfg.get("num_layers", 1) != 1:
            raise SvbenchError(f"num_layers={cfg.num_layers!r}: the EAGLE-3 head has one decoder layer (num_layers=1)")
        self.module = eagle3_from_target(target, vocab)
        self.steps, self.decay = int(cfg.get("ttt_steps", 1)), float(cfg.get("ttt_decay", 0.8))
        self.target_pass = TargetPass(target, max_tokens=cfg.get("feature_cache_tokens"),
                                      feature_layers=self.module.target_layers,
                                      vocab_member=vocab_membership(cfg, target, vocab))
        full = target.lm_head.weight.detach()
        self.target_head = vocab_rows(full, None if vocab is None else sorted(vocab))  # (N, d): draft index order

    def loss(self, ids, attention, answer, keys=None):
        hidden, _, fused, inside = self.target_pass.batch(keys, ids, attention)  # (B, T, d), (B, T, 3d), (B, T)
        labels = UnrolledSoftLabels(hidden[:, 1:], answer[:, 1:], self.target_head,
                                    None if inside is None else inside[:, 1:])

        def step_loss(j, predicted, where):
            draft_logits = self.module.logits(predicted)  # (M_j, N); soft_cross_entropy works in float32 itself
            probs, keep = labels.step(j, where)  # (M_j, N), (M_j,) or None
            return soft_cross_entropy(draft_logits, probs, keep), draft_logits, probs

        return training_time_test_loss(self.module, ids[:, 1:], fused[:, :-1], answer, self.steps, self.decay,
                                       step_loss)

    def export(self, folder):
        save_eagle3(self.module.eval(), folder)


RECIPES = {"draft_lm": DraftLMRecipe, "glide": GlideRecipe, "eagle": EagleRecipe, "eagle3": Eagle3Recipe}
