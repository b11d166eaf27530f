"""The frozen CLIP text encoder, and learnable class prompts passed through it.

A learnable class is `l` token embeddings placed where `{}` stands in a fixed template
("A photo of a {} in the scene."). The template is tokenised once; the placeholder positions are
found by tokenising it with two different filler words and comparing. At each forward the
placeholder embeddings are overwritten with the learnable ones, then the text transformer, final
norm, end-of-text pooling and projection run as in open_clip. Gradients reach the prompts only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(nn.Module):
    """Frozen view of an open_clip text tower (CLIP or CustomTextCLIP with a TextTransformer).

    `encode(token_ids [N, T]) -> [N, D]` matches `model.encode_text`; `encode_embeddings(
    embeds [N, T, d_e], token_ids [N, T]) -> [N, D]` runs the same tower from token embeddings.
    """

    def __init__(self, clip: nn.Module, tokenizer):
        super().__init__()
        tower = clip.text if hasattr(clip, "text") else clip
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
            if not hasattr(tower, attr):
                raise ValueError(f"text tower {type(tower).__name__} has no {attr}: only open_clip "
                                 "TextTransformer-style towers support learnable class prompts")
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            raise ValueError("text towers with a class token or padding mask are not supported")
        self.tower = tower
        self.pool_type = getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", "argmax")
        self.eos_id = getattr(tower, "text_eos_id", None) or getattr(tower, "eos_id", None)
        self.tokenizer = tokenizer
        for name, p in self.tower.named_parameters():
            if not name.startswith("visual."):  # a CLIP holds its text tower at the top level
                p.requires_grad_(False)

    @property
    def context_length(self) -> int:
        return self.tower.positional_embedding.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.tower.token_embedding.embedding_dim

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts))  # [N, T]
        return ids.to(self.tower.token_embedding.weight.device)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.tower.token_embedding(token_ids)  # [N, T, d_e]

    def encode(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.encode_embeddings(self.embed_tokens(token_ids), token_ids)

    def _used_length(self, token_ids: torch.Tensor) -> int:
        """Tokens that can reach the pooled output: with a causal mask and end-of-text pooling,
        nothing after the last end-of-text token does, so the padding can be cut off exactly."""
        T = token_ids.shape[1]
        mask = self.tower.attn_mask
        if mask is None or self.pool_type not in ("argmax", "eos") or token_ids.numel() == 0:
            return T
        if not bool(torch.isinf(mask[0, 1:]).all()):  # not causal: every token matters
            return T
        if self.pool_type == "argmax":
            last = int(token_ids.argmax(dim=1).max())
        else:
            last = int((token_ids == self.eos_id).int().argmax(dim=1).max())
        return last + 1

    def encode_embeddings(self, embeds: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        t = self.tower
        T = self._used_length(token_ids)  # the template is ~14 of 77 tokens: 5x less work
        embeds, token_ids = embeds[:, :T], token_ids[:, :T]
        cast = t.transformer.get_cast_dtype()
        x = embeds.to(cast) + t.positional_embedding[:T].to(cast)  # [N, T, d_e]
        x = t.transformer(x, attn_mask=t.attn_mask[:T, :T] if t.attn_mask is not None else None)
        x = t.ln_final(x)
        x = text_global_pool(x, token_ids, self.pool_type, eos_token_id=self.eos_id)  # [N, d_e]
        proj = t.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x  # [N, D]

    @torch.no_grad()
    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Prompt-ensembled text features: for each class, the normalised mean over templates of
        the normalised template features. Returns [C, D], L2-normalised."""
        out = []
        for name in class_names:
            ids = self.tokenize([tpl.format(name) for tpl in templates])
            feats = F.normalize(self.encode(ids).float(), dim=-1)  # [T, D]
            out.append(F.normalize(feats.mean(0), dim=-1))
        return torch.stack(out)


def placeholder_positions(tokenizer, template: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise `template` with `length` placeholder words in `{}`. Returns (ids [T], positions [l])."""
    a = tokenizer([template.format(" ".join(["X"] * length))])[0]
    b = tokenizer([template.format(" ".join(["Y"] * length))])[0]
    pos = (a != b).nonzero().flatten()
    if pos.numel() != length:
        raise ValueError(f"prompts.template {template!r}: expected {length} placeholder tokens, "
                         f"found {pos.numel()} (is the context length too short?)")
    return a, pos


class ClassPrompts(nn.Module):
    """K learnable classes of `length` token embeddings each, encoded by the frozen text encoder.

    Args:
        text: the frozen `TextEncoder`.
        num_classes: K.  length: l.  template: text with one `{}`.
        seed: seed of the random-token initialisation (ids drawn uniformly from the vocabulary,
            special tokens excluded, embedded with CLIP's token embedding).
        init_words: draw the initial ids from the tokens of these words only (None: the whole
            vocabulary, the authors'). For a CLIP trained on a small vocabulary, whose other token
            embeddings never trained.
    Forward: (the same text encoder) -> class features [K, D] (not normalised).
    """

    def __init__(self, text: TextEncoder, num_classes: int, length: int, template: str, seed: int = 0,
                 init_words: list[str] | None = None):
        super().__init__()
        ids, pos = placeholder_positions(text.tokenizer, template, length)
        device = text.tower.token_embedding.weight.device
        self.register_buffer("token_ids", ids.to(device), persistent=False)  # [T]
        self.register_buffer("positions", pos.to(device), persistent=False)  # [l]
        vocab = text.tower.token_embedding.num_embeddings
        special = int(ids.max())  # the end-of-text id is the largest in CLIP's vocabulary
        high = min(vocab, special - 1) if special > 1 else vocab
        gen = torch.Generator().manual_seed(seed)
        if init_words:
            pool = torch.cat([text.tokenize([w])[0] for w in init_words])
            pool = pool[(pool > 0) & (pool < high)].unique()  # the words' tokens, no padding or specials
            if pool.numel() == 0:
                raise ValueError(f"prompts.init_words {init_words[:5]} give no ordinary tokens")
            init_ids = pool[torch.randint(0, pool.numel(), (num_classes, length), generator=gen)]  # [K, l]
        else:
            init_ids = torch.randint(0, high, (num_classes, length), generator=gen)  # [K, l]
        with torch.no_grad():
            init = text.tower.token_embedding.weight[init_ids.to(device)].clone().float()  # [K, l, d_e]
        self.tokens = nn.Parameter(init)
        self.template = template

    @property
    def num_classes(self) -> int:
        return self.tokens.shape[0]

    def forward(self, text: TextEncoder) -> torch.Tensor:
        K = self.tokens.shape[0]
        ids = self.token_ids.unsqueeze(0).expand(K, -1)  # [K, T]
        embeds = text.embed_tokens(ids).detach().clone()  # [K, T, d_e]
        embeds[:, self.positions] = self.tokens.to(embeds.dtype)  # learnable tokens at the placeholders
        return text.encode_embeddings(embeds, ids)  # [K, D]
