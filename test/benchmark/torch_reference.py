"""The PyTorch reference step that bench_peer.py times: insightface's arcface_torch recipe.

Written here from the published architecture (deepinsight/insightface,
recognition/arcface_torch: backbones/iresnet.py and losses.py, MIT), not copied:
IResNet-50 (improved residual units: BN, 3x3 conv, BN, PReLU, 3x3 conv with
the stride, BN; stages of 3, 4, 14, 3 units of 64 to 512 channels; a
BN-dropout-fc-BN embedding of 512), the ArcFace margin (s=64, m=0.5) on
normalised class centres, softmax cross-entropy, SGD with momentum 0.9 and
weight decay 5e-4. As in arcface_torch, autocast covers the backbone and the
margin head runs in float32. Runs in its own environment (.venv-peer, CPU
PyTorch); imports nothing from the project.
"""
import math
import time

import torch
from torch import nn
from torch.nn import functional


def _conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class ImprovedBlock(nn.Module):
    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels, eps=1e-5), _conv3x3(in_channels, channels),
            nn.BatchNorm2d(channels, eps=1e-5), nn.PReLU(channels),
            _conv3x3(channels, channels, stride), nn.BatchNorm2d(channels, eps=1e-5))
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels, eps=1e-5))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.residual(x) + identity


class IResNet(nn.Module):
    def __init__(self, units=(3, 4, 14, 3), embedding_size=512, image_size=112):
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(3, 64), nn.BatchNorm2d(64, eps=1e-5), nn.PReLU(64))
        stages, in_channels = [], 64
        for count, channels in zip(units, (64, 128, 256, 512)):
            for index in range(count):
                stages.append(ImprovedBlock(in_channels, channels, 2 if index == 0 else 1))
                in_channels = channels
        self.stages = nn.Sequential(*stages)
        side = image_size // 16
        self.bn = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)

    def forward(self, x):
        x = self.bn(self.stages(self.stem(x)))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


class ArcFaceHead(nn.Module):
    def __init__(self, num_classes, embedding_size=512, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.s, self.m = s, m

    def forward(self, embedding, labels):
        cosine = functional.linear(functional.normalize(embedding),
                                   functional.normalize(self.weight)).clamp(-1.0, 1.0)
        target = cosine.gather(1, labels[:, None])
        theta = torch.acos(target)
        margin = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m), target)
        logits = cosine.scatter(1, labels[:, None], margin) * self.s
        return functional.cross_entropy(logits, labels)


def time_step(bfloat16, batch_size=32, image_size=112, num_classes=1000, steps=6, warmup=2):
    """Mean seconds per training step over `steps` after `warmup` (constant inputs)."""
    torch.manual_seed(0)
    backbone, head = IResNet(image_size=image_size), ArcFaceHead(num_classes)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
    labels = torch.randint(0, num_classes, (batch_size,))

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bfloat16):
            embedding = backbone(images)
        loss = head(embedding.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.time()
    for _ in range(steps):
        step()
    return (time.time() - start) / steps, '%s, %d threads' % (torch.__version__,
                                                              torch.get_num_threads())
