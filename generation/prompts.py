"""Prompt embeddings for SDXL through compel: both text encoders, weights, blends, pooled output.

The user's Midjourney/A1111 weights are translated to compel syntax by :mod:`generation.weights`;
compel then weights token embeddings and blends ``::`` parts. SDXL also needs a pooled embedding
from its second encoder: compel would pool the raw compel string (quotes, ``.blend(...)`` and
all), so the pooled vector is instead built from each part's plain words and blended with the
same normalised weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from generation.errors import PromptTooLongError
from generation.weights import parse_weighted_prompt, to_compel


@dataclass(frozen=True)
class PromptEmbeddings:
    """What the SDXL pipeline takes instead of a prompt string (batch of one)."""

    embeds: torch.Tensor
    pooled: torch.Tensor


class TokenCounter:
    """Counts a prompt's tokens the way the encoders will see them, and enforces the window.

    A tokenizer carries per-call state, so a thread other than the engine's (the bot's prompt
    check) gets its own counter over its own copy (``TokenCounter.copy_of``).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.max_tokens = int(tokenizer.model_max_length)

    @classmethod
    def copy_of(cls, tokenizer: Any) -> TokenCounter:
        return cls(copy.deepcopy(tokenizer))

    def token_counts(self, prompt: str) -> list[int]:
        """Tokens per ``::`` part, start and end markers included, as the encoders see them."""
        counts = []
        for segment in parse_weighted_prompt(prompt):
            # compel tokenizes each weighted fragment separately, so count the same way.
            body = sum(
                len(self._tokenizer(fragment.text, add_special_tokens=False).input_ids)
                for fragment in segment.fragments
            )
            counts.append(body + 2)
        return counts

    def check_length(self, prompt: str, what: str = "prompt") -> None:
        """Raise PromptTooLongError if any part of ``prompt`` exceeds the encoders' window."""
        counts = self.token_counts(prompt)
        worst = max(counts)
        if worst > self.max_tokens:
            where = f"one `::` part of the {what}" if len(counts) > 1 else f"the {what}"
            raise PromptTooLongError(
                f"{where} is {worst} tokens long; the limit is {self.max_tokens} tokens "
                "(start and end markers included). Shorten it or split it into `::` parts."
            )


class PromptEncoder(TokenCounter):
    """Encodes prompts with a pipeline's two tokenizers and text encoders."""

    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        from compel import Compel, ReturnedEmbeddingsType

        # SDXL conditions on the penultimate hidden states, un-normalised, of both encoders.
        def common(tokenizer: Any, encoder: Any) -> Any:
            return Compel(
                tokenizer=tokenizer,
                text_encoder=encoder,
                returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                # Validation already refused over-long parts; truncating keeps shapes fixed.
                truncate_long_prompts=True,
                dtype_for_device_getter=lambda _device: dtype,
                device=str(device),
            )

        self._compel_1 = common(pipe.tokenizer, pipe.text_encoder)
        self._compel_2 = common(pipe.tokenizer_2, pipe.text_encoder_2)
        super().__init__(pipe.tokenizer)
        self._force_zeros_for_empty = bool(pipe.config.get("force_zeros_for_empty_prompt", True))

    def encode(self, prompt: str) -> PromptEmbeddings:
        """Hidden states of both encoders side by side, and the blended pooled embedding."""
        text = to_compel(prompt)
        with torch.no_grad():
            left = self._compel_1.build_conditioning_tensor(text)
            right = self._compel_2.build_conditioning_tensor(text)
            embeds = torch.cat([left, right], dim=-1)
            segments = parse_weighted_prompt(prompt)
            provider = self._compel_2.conditioning_provider
            pooled_parts = provider.get_pooled_embeddings(
                [segment.plain_text for segment in segments], device=self._compel_2.device
            )
            weights = torch.tensor(
                [segment.weight for segment in segments],
                dtype=pooled_parts.dtype,
                device=pooled_parts.device,
            )
            # Like compel's blend: ``::`` weights are normalised; a single part counts fully.
            weights = weights / weights.sum() if len(segments) > 1 else torch.ones_like(weights)
            pooled = (pooled_parts * weights[:, None]).sum(dim=0, keepdim=True)
        return PromptEmbeddings(embeds=embeds, pooled=pooled)

    def encode_negative(self, prompt: str, like: PromptEmbeddings) -> PromptEmbeddings:
        """The negative prompt's embeddings; zeros for an empty one, as SDXL was trained."""
        if not prompt.strip() and self._force_zeros_for_empty:
            return PromptEmbeddings(
                embeds=torch.zeros_like(like.embeds), pooled=torch.zeros_like(like.pooled)
            )
        return self.encode(prompt)
