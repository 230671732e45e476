"""A tiny BERT built from its config and a dataset of random tokens (nothing downloaded):
the Hugging Face ``Trainer`` tests' model and data, in one process and under torchrun."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification


class RandomTokens(torch.utils.data.Dataset):
    """``n`` sequences of random token ids with random binary labels."""

    def __init__(self, n: int = 64, length: int = 16, vocab: int = 100, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return BertForSequenceClassification(config)
