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
from torch.nn import functional as F

from svbench.draft_lm import draft_from_target, save_draft
from svbench.nets.eagle import head_from_target, save_head
from svbench.nets.glide import glide_from_target, save_glide


def soft_cross_entropy(draft_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """-sum_v p(v) log q(v), averaged over rows: KL(p || q) + H(p). (M, N) each."""
    return -(F.softmax(target_logits.float(), -1) * F.log_softmax(draft_logits.float(), -1)).sum(-1).mean()


def agreement(draft_logits: torch.Tensor, target_logits: torch.Tensor) -> float:
    return float((draft_logits.argmax(-1) == target_logits.argmax(-1)).float().mean()) if len(draft_logits) else 0.0


class DraftLMRecipe:
    """Vanilla-SD draft LM: a few target-width layers; CE on the target's answer tokens."""

    def __init__(self, cfg, target, vocab):
        self.module = draft_from_target(target, cfg.num_layers, list(cfg.init_layers))
        self.vocab = vocab
        full = self.module.lm_head.weight
        self.head = full if vocab is None else full[torch.tensor(vocab)].detach()  # (N, d)
        self.to_index = None
        if vocab is not None:  # full id -> subset index, -100 (ignored) outside the subset
            self.to_index = torch.full((full.shape[0],), -100, dtype=torch.long)
            self.to_index[torch.tensor(vocab)] = torch.arange(len(vocab))

    def loss(self, ids, attention, answer, keys=None):
        labels = ids[:, 1:][answer[:, 1:]]  # (M,) the next token at every answer position
        if self.to_index is not None:
            labels = self.to_index[labels]
        hidden = self.module.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, d)
        logits = (hidden[:, :-1][answer[:, 1:]] @ self.head.T).float()  # (M, N)
        loss = F.cross_entropy(logits, labels, ignore_index=-100)
        valid = labels >= 0
        acc = float((logits.argmax(-1)[valid] == labels[valid]).float().mean()) if valid.any() else 0.0
        return loss, acc, int(labels.numel())

    def export(self, folder):
        save_draft(self.module.eval(), folder, self.vocab)


class TargetPass:
    """The frozen target's outputs per training row, computed on first use: final-normed hidden states
    (T, d) and, for GliDe, the K/V of the given layers (kv_heads, T, head_dim) each; bf16 in memory."""

    def __init__(self, target, kv_layers: list[int] = ()):
        self.target, self.kv_layers, self.rows = target, list(kv_layers), {}

    @torch.no_grad()
    def batch(self, keys: list, ids, attention):
        todo = [b for b, key in enumerate(keys) if key not in self.rows]
        if todo:
            out = self.target.model(input_ids=ids[todo], attention_mask=attention[todo], use_cache=bool(self.kv_layers))
            for j, b in enumerate(todo):
                n = int(attention[b].sum())
                kv = [(out.cache.layers[i].keys[j, :, :n].to(torch.bfloat16),
                       out.cache.layers[i].values[j, :, :n].to(torch.bfloat16)) for i in self.kv_layers]
                self.rows[keys[b]] = (out.last_hidden_state[j, :n].to(torch.bfloat16), kv)
        T = ids.shape[1]

        def padded(t):  # (n, ...) or (heads, n, hd) -> padded to T on the token axis
            axis = 0 if t.dim() == 2 else 1
            pad = [0, 0] * (t.dim() - 1 - axis) + [0, T - t.shape[axis]]
            return F.pad(t, pad)

        features = torch.stack([padded(self.rows[k][0]) for k in keys])  # (B, T, d)
        kv = [(torch.stack([padded(self.rows[k][1][i][0]) for k in keys]),  # (B, kv_heads, T, hd)
               torch.stack([padded(self.rows[k][1][i][1]) for k in keys])) for i in range(len(self.kv_layers))]
        return features, kv


def block_mask(T: int, block: int, dtype) -> torch.Tensor:
    """Additive (1, 1, T, T) GliDe training mask: a query in block b = t // block sees target K/V of earlier
    blocks only (imitating a target cache that stops at the round's root). Queries in block 0 see key 0
    (a fully masked row would give NaN; these are prompt positions, outside the loss)."""
    blocks = torch.arange(T) // block
    allowed = blocks[None, :] < blocks[:, None]  # (T, T) [query, key]
    allowed[:block, 0] = True
    return torch.zeros(T, T, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


class GlideRecipe:
    """GliDe draft: soft CE to the target's next-token distribution, stale-cache block mask (ALGORITHMS §3)."""

    def __init__(self, cfg, target, vocab):
        init_from = None
        if cfg.get("init_from"):  # a trained draft LM folder: start from its layers
            from svbench.draft_lm import load_draft
            from svbench.models import resolve_folder
            init_from = load_draft(resolve_folder(cfg.init_from, key="init_from"), target)
        self.module = glide_from_target(target, cfg.num_layers, vocab, init_from)
        if cfg.get("train_only_cross_attention"):  # keep the (trained) LM part fixed; learn what to read
            for name, param in self.module.named_parameters():
                param.requires_grad_(".cross_attn." in name)
        self.block = int(cfg.block_size)
        self.target_pass = TargetPass(target, self.module.target_layers())

    def loss(self, ids, attention, answer, keys=None):
        features, kv = self.target_pass.batch(keys, ids, attention)
        B, T = ids.shape
        dtype = self.module.model.norm.weight.dtype
        positions = torch.arange(T)[None].expand(B, T)
        hidden = self.module(ids, positions, kv, cross_mask=block_mask(T, self.block, torch.float32).to(dtype))
        where = answer[:, 1:]  # positions t whose next token x_{t+1} the target wrote
        draft_logits = self.module.logits(hidden[:, :-1][where])  # (M, N)
        target_logits = features[:, :-1][where].to(self.module.head_weight.dtype) @ self.module.head_weight.T
        return soft_cross_entropy(draft_logits, target_logits), agreement(draft_logits, target_logits), int(where.sum())

    def export(self, folder):
        save_glide(self.module.eval(), folder)


class EagleRecipe:
    """EAGLE head, EAGLE-1 recipe: SmoothL1(f^_{t+1}, f_{t+1}) + w * soft CE(lm_head), uniform noise on the
    input features (ALGORITHMS §5)."""

    def __init__(self, cfg, target, vocab):
        init = cfg.init_layer if cfg.init_layer is None or cfg.init_layer >= 0 else \
            target.config.num_hidden_layers + cfg.init_layer
        self.module = head_from_target(target, init_layer=init, vocab_ids=vocab)
        self.noise, self.ce_weight = float(cfg.feature_noise), float(cfg.ce_weight)
        self.target_pass = TargetPass(target)

    def loss(self, ids, attention, answer, keys=None):
        features, _ = self.target_pass.batch(keys, ids, attention)
        features = features.float()
        B, T = ids.shape
        inputs = features[:, :-1]  # f_t, t = 0..T-2
        if self.noise and self.module.training:
            inputs = inputs + (torch.rand_like(inputs) - 0.5) * 2 * self.noise  # U(-noise, noise)
        positions = torch.arange(T - 1)[None].expand(B, T - 1)
        predicted = self.module(ids[:, 1:], inputs, positions)  # (B, T-1, d): f^_{t+1}
        where = answer[:, 1:]  # f_{t+1} sits at an answer position
        pred, true = predicted[where].float(), features[:, 1:][where]  # (M, d)
        feature_loss = F.smooth_l1_loss(pred, true)
        head = self.module.head_weight.float()
        draft_logits, target_logits = pred @ head.T, true @ head.T  # (M, N)
        loss = feature_loss + self.ce_weight * soft_cross_entropy(draft_logits, target_logits)
        return loss, agreement(draft_logits, target_logits), int(where.sum())

    def export(self, folder):
        save_head(self.module.eval(), folder)


RECIPES = {"draft_lm": DraftLMRecipe, "glide": GlideRecipe, "eagle": EagleRecipe}
