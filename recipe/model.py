"""The custom ResNet ("ResNet-9") of the original write-up: 6,573,130 parameters at width 64."""
from torch import nn

__all__ = ['CustomResNet']


def conv_bn(c_in, c_out, pool=False):
    "conv3x3 (no bias: BN follows) -> [MaxPool2d(2)] -> BN -> ReLU"
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool: layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    "x + block(x)"
    def __init__(self, block): super().__init__(); self.block = block
    def forward(self, x): return x + self.block(x)


def layer(c_in, c_out, residual):
    "conv -> pool -> BN -> ReLU, then (optionally) a residual block of two conv-BN-ReLU added to it"
    first = conv_bn(c_in, c_out, pool=True)
    if not residual: return first
    return nn.Sequential(first, Residual(nn.Sequential(conv_bn(c_out, c_out), conv_bn(c_out, c_out))))


class CustomResNet(nn.Sequential):
    "PrepLayer w -> Layer1 2w (+R1) -> Layer2 4w -> Layer3 8w (+R2) -> MaxPool(4) -> FC. Returns logits."
    def __init__(self, n_out=10, width=64):
        if not (isinstance(width, int) and width > 0): raise ValueError(f"width must be a positive integer, got {width!r}")
        w = width
        super().__init__(
            conv_bn(3, w),                     # prep:   (B, w, 32, 32)
            layer(w, 2*w, residual=True),      # layer1: (B, 2w, 16, 16)
            layer(2*w, 4*w, residual=False),   # layer2: (B, 4w, 8, 8)
            layer(4*w, 8*w, residual=True),    # layer3: (B, 8w, 4, 4)
            nn.MaxPool2d(4), nn.Flatten(),     #         (B, 8w)
            nn.Linear(8*w, n_out))
