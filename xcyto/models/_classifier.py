"""The one wrapper every architecture is built into.

Splitting a network into ``backbone -> pool -> classifier`` gives every model the same
three places that explanations need: the backbone's output is the feature map that
CAM methods weight (``cam_layer``), the pooled vector is the embedding used for
neighbours and maps (``embedding_layer``), and the classifier maps it to logits.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class ConcatPool(nn.Module):
    """Adaptive max-pool and average-pool concatenated: ``(B, C, h, w) -> (B, 2C)``."""

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.cat([feature_map.amax(dim=(2, 3)), feature_map.mean(dim=(2, 3))], dim=1)


class AvgPool(nn.Module):
    """Global average pool: ``(B, C, h, w) -> (B, C)``."""

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))


HEADS = {"linear": (AvgPool, 1, 0.2), "concat_pool": (ConcatPool, 2, 0.5)}


class CellClassifier(nn.Module):
    """``backbone`` (image -> feature map) + ``pool`` (-> embedding) + ``classifier``.

    ``head="linear"``: average pool, dropout 0.2, linear. ``head="concat_pool"``: max and
    average pool concatenated, dropout 0.5, linear (the head of earlier SIPaKMeD work).
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, head: str = "linear"):
        super().__init__()
        pool_type, width, dropout = HEADS[head]
        self.backbone = backbone
        self.pool = pool_type()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features * width, num_classes)
        self.head = head
        self.num_classes = num_classes
        self.embedding_dim = num_features * width

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map ``(B, C, h, w)``, the CAM target."""
        return self.backbone(images)

    def forward_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features ``(B, D)`` the classifier sees (not normalised)."""
        return self.pool(self.backbone(images))

    def forward_head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_embedding(images))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())


@contextmanager
def evaluating(model: nn.Module):
    """Eval mode for the duration, then the caller's mode again (results must not depend
    on batch composition, and callers that were training keep training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
