"""Draft networks that read the target's internals: the GliDe draft (target KV cache) and the EAGLE head
(target features). Each module holds only its own trainable weights; the target's embedding and lm_head
are attached, frozen, at load time and never saved."""
