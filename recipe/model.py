"""The nets: the custom ResNet ("ResNet-9") of the original write-up (6,573,130 parameters at width 64), and the
fast profile's net after airbench94 (1,972,792 parameters at width 64, 1,971,352 of them trained)."""
import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, group_depths

__all__ = ['ACTS', 'CustomResNet', 'onednn_conv_backward', 'WeightGradByShifts', 'weight_grad_by_shifts', 'SmallMapConv', 'FastNet', 'shift_weight_grads', 'init_whitening', 'default_init', 'ARCHS', 'make_model']

ACTS = {'relu': nn.ReLU, 'gelu': nn.GELU, 'silu': nn.SiLU}  # the activations a net can be built with (`act`)
assert tuple(ACTS) == ACTIVATIONS, "config.ACTIVATIONS (the names settings.py accepts before torch loads) must name ACTS"


def activation(act):
    if act not in ACTS: raise ValueError(f"act must be one of {', '.join(ACTS)}, got {act!r}")
    return nn.ReLU(inplace=True) if act == 'relu' else ACTS[act]()


def conv_bn(c_in, c_out, pool=False, act='relu'):
    "conv3x3 (no bias: BN follows) -> [MaxPool2d(2)] -> BN -> ReLU (or `act`)"
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool: layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), activation(act))


class Residual(nn.Module):
    "x + block(x)"
    def __init__(self, block): super().__init__(); self.block = block
    def forward(self, x): return x + self.block(x)


def layer(c_in, c_out, residual, act='relu'):
    "conv -> pool -> BN -> ReLU, then (optionally) a residual block of two conv-BN-ReLU added to it"
    first = conv_bn(c_in, c_out, pool=True, act=act)
    if not residual: return first
    return nn.Sequential(first, Residual(nn.Sequential(conv_bn(c_out, c_out, act=act), conv_bn(c_out, c_out, act=act))))


class CustomResNet(nn.Sequential):
    """PrepLayer w -> Layer1 2w (+R1) -> Layer2 4w -> Layer3 8w (+R2) -> global max pool -> FC. Returns logits.
    The write-up's MaxPool(4) is global at 32x32 (layer3 is 4x4 there): as a global pool the net takes any size >= 16."""
    def __init__(self, n_out=10, width=64, act='relu'):
        if not (isinstance(width, int) and width > 0): raise ValueError(f"width must be a positive integer, got {width!r}")
        w = width
        super().__init__(
            conv_bn(3, w, act=act),                     # prep:   (B, w, 32, 32) at size 32
            layer(w, 2*w, residual=True, act=act),      # layer1: (B, 2w, 16, 16)
            layer(2*w, 4*w, residual=False, act=act),   # layer2: (B, 4w, 8, 8)
            layer(4*w, 8*w, residual=True, act=act),    # layer3: (B, 8w, 4, 4)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),  #    (B, 8w): MaxPool(4) at 32x32
            nn.Linear(8*w, n_out))

    def initialize(self, s, images):
        "PyTorch's default init, as the write-up: nothing to do (the same call as FastNet's)"


# The fast net, after Keller Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench, and "94% on CIFAR-10 in
# 3.29 seconds on a single GPU", 2024): the ideas are his, this code is ours.

class Mul(nn.Module):
    "x * scale: airbench's 1/9 on the logits, so the net starts near-uniform"
    def __init__(self, scale): super().__init__(); self.scale = scale
    def forward(self, x): return x * self.scale


def batch_norm(c, mom=0.4):
    "BatchNorm with no learned scale (weight frozen at 1) and fast-moving statistics (PyTorch momentum 0.4)"
    bn = nn.BatchNorm2d(c, momentum=mom, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


def identity_conv(c_in, c_out, kind=nn.Conv2d):
    "conv3x3 whose first c_in filters start as the identity (Dirac), so each group starts close to a pass-through"
    conv = kind(c_in, c_out, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[:c_in])
    return conv


def onednn_conv_backward(grad, x, weight, mask):
    "PyTorch's own backward of a 3x3 'same' conv (stride 1, no bias): (input grad, weight grad, None) where `mask` asks"
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)


class WeightGradByShifts(torch.autograd.Function):
    """A 3x3 'same' conv (no bias, channels_last) whose weight gradient is a matrix product of the output gradient with
    the input's 9 shifted copies side by side (its 3x3 patches), a few images at a time (about ROWS output pixels) so
    that the copies stay small. On small maps (7x7 and less at 32 pixels, 5x5 and 2x2 at 24) oneDNN's weight-gradient
    kernel runs at a fourth to an eighth of its forward's rate on an AMX CPU; these products take 0.8x its time at 7x7,
    half at 5x5 and a quarter at 3x3, and lose on 11x11 and larger maps (bench/weight_grad_speed.py, docs/results.md).
    The input gradient is oneDNN's."""
    ROWS = 6272  # 128 images of 7x7 maps, the fastest of 32-256 there; on smaller maps more images a product did as well

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = onednn_conv_backward(grad, x, weight, [True, False, False])[0] if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]: return grad_x, None
        return grad_x, weight_grad_by_shifts(x, grad).to(weight.dtype).contiguous(memory_format=torch.channels_last)


def weight_grad_by_shifts(x, grad):
    """The weight gradient (fp32, (c_out, c, 3, 3)) of a 3x3 'same' conv of `x` (n, c, h, w; channels_last) whose
    output got `grad`: the output gradient times the input's 3x3 patches (its 9 shifted copies side by side), summed
    over chunks of about WeightGradByShifts.ROWS output pixels"""
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (n, h+2, w+2, c), a view of the channels_last pad
    total, chunk = x.new_zeros(grad.size(1), 9 * c, dtype=torch.float32), max(1, WeightGradByShifts.ROWS // (h * w))
    for i in range(0, n, chunk):
        j = i + chunk
        patches = torch.stack([padded[i:j, a:a + h, b:b + w] for a in range(3) for b in range(3)], 3)  # (k, h, w, 9, c)
        grad_rows = grad[i:j].permute(1, 0, 2, 3).reshape(grad.size(1), -1)  # (c_out, k h w), a copy: faster products than a transposed view
        total += grad_rows @ patches.view(-1, 9 * c)
    return total.view(grad.size(1), 3, 3, c).permute(0, 3, 1, 2)


class SmallMapConv(nn.Conv2d):
    """conv3x3 (padding 1, no bias) for groups 2-3: `WeightGradByShifts` while training under bf16 autocast
    on the CPU on maps of at most 7x7 once `by_shifts` is set (recipe/run.py sets it on AMX CPUs, where the products
    were measured faster at 2x2, 3x3, 5x5 and 7x7 and slower at 15x15 and 31x31), else an ordinary conv. The same
    parameters and state dict as nn.Conv2d."""
    by_shifts = False
    MAX_MAP = 7

    def __init__(self, c_in, c_out, kernel_size=3, padding=1, bias=False):
        super().__init__(c_in, c_out, kernel_size, padding=padding, bias=bias)
        if not (self.kernel_size == (3, 3) and self.padding == (1, 1) and not bias):
            raise ValueError(f"SmallMapConv is a 3x3 conv with padding 1 and no bias, got kernel {kernel_size}, padding {padding}, bias {bias}")

    def forward(self, x):
        if not (self.by_shifts and torch.is_grad_enabled() and x.device.type == 'cpu' and max(x.shape[-2:]) <= self.MAX_MAP
                and torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16):
            return super().forward(x)
        with torch.autocast('cpu', enabled=False):  # autocast's casts, made here where autograd sees them
            return WeightGradByShifts.apply(x.bfloat16(), self.weight.bfloat16())


def conv_group(c_in, c_out, act='gelu', depth=2, bn_mom=0.4, small_maps=False):
    """depth 2: conv -> MaxPool2d(2) -> BN -> GELU -> conv -> BN -> GELU (or `act`). depth 3 (airbench96): the second
    conv's output is followed by a third conv -> BN, added to the first's output (a residual), then GELU. With
    `small_maps` (the groups whose maps can be 7x7 or smaller) every conv is a `SmallMapConv`."""
    kind = SmallMapConv if small_maps else nn.Conv2d
    conv = lambda: identity_conv(c_out, c_out, kind)
    first = [identity_conv(c_in, c_out, kind), nn.MaxPool2d(2), batch_norm(c_out, bn_mom), activation(act)]
    if depth == 2: return nn.Sequential(*first, conv(), batch_norm(c_out, bn_mom), activation(act))
    return nn.Sequential(*first, Residual(nn.Sequential(conv(), batch_norm(c_out, bn_mom), activation(act),
                                                        conv(), batch_norm(c_out, bn_mom))), activation(act))


class FastNet(nn.Sequential):
    """Frozen 2x2 whitening conv (24 filters) -> GELU -> groups w, 4w, 4w -> global max pool -> FC (x 1/9). Logits.
    `act`: the groups' activation (the one after the whitening stays GELU, as in airbench and Hiverge's speedrun).
    `widths`: the three groups' channels instead of (w, 4w, 4w) (airbench95: 128, 384, 384); `depth`: convs per group,
    2 or 3 (`conv_group`), or one for each group; `bn_mom`: the BatchNorms' PyTorch momentum (airbench96: PyTorch's default, 0.1)"""
    def __init__(self, n_out=10, width=64, act='gelu', widths=None, depth=2, bn_mom=0.4):
        if not (isinstance(width, int) and width > 0): raise ValueError(f"width must be a positive integer, got {width!r}")
        widths = tuple(widths or (width, 4*width, 4*width))
        if not (len(widths) == 3 and all(isinstance(w, int) and w > 0 for w in widths)):
            raise ValueError(f"widths must be 3 positive integers, got {widths!r}")
        w1, w2, w3 = widths
        d1, d2, d3 = group_depths(depth)
        whiten = nn.Conv2d(3, 24, 2)                 # (B, 24, 31, 31); weights from `init_whitening`, never trained
        whiten.weight.requires_grad_(False)
        super().__init__(whiten, nn.GELU(),
                         conv_group(24, w1, act, d1, bn_mom),  # (B, w, 15, 15)
                         conv_group(w1, w2, act, d2, bn_mom, small_maps=True),  # (B, 4w, 7, 7)
                         conv_group(w2, w3, act, d3, bn_mom, small_maps=True),  # (B, 4w, 3, 3)
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(),    # (B, 4w)
                         nn.Linear(w3, n_out, bias=False), Mul(1/9))

    def initialize(self, s, images):
        """The init of settings `s`: the first conv whitens `images()` (the training images, normalized; a function,
        called only here) and stays frozen, or (whiten=False, an ablation) is trained from random; identity_init=False
        (an ablation): PyTorch's default init for every trained conv"""
        if s['whiten']: init_whitening(self, images())
        else: self[0].weight.requires_grad_(True)
        if not s['identity_init']: default_init(self)


def shift_weight_grads(model) -> bool:
    "Turn on `WeightGradByShifts` in the model's `SmallMapConv`s; whether it has any"
    convs = [m for m in model.modules() if isinstance(m, SmallMapConv)]
    for m in convs: m.by_shifts = True
    return bool(convs)


@torch.no_grad()
def init_whitening(model: FastNet, images, eps=5e-4):
    """Set the first conv to whiten 2x2 patches: the eigenvectors of the patches' covariance over `images`
    (normalized, (N, 3, H, W)), each divided by the square root of its eigenvalue, and their negatives."""
    conv = model[0]
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)            # (N, 3, H-1, W-1, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()  # one row per patch, (c, dy, dx) order
    patches = patches - patches.mean(0)
    eigvals, eigvecs = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending eigenvalues
    filters = (eigvecs.T / (eigvals + eps).sqrt()[:, None]).reshape(12, 3, 2, 2)
    conv.weight.copy_(torch.cat([filters, -filters]).float())
    conv.bias.zero_()


def default_init(model):
    "PyTorch's default init for every trained conv, instead of the identity (the `no-identity-init` ablation)"
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad: m.reset_parameters()


ARCHS = {'resnet': CustomResNet, 'fast': FastNet}


def make_model(arch, n_out, width, act=None, **shape):
    """One of ARCHS by name: 'resnet' (the custom ResNet) or 'fast' (the airbench94-style net), with activation `act`
    (one of ACTS; None: the net's own, ReLU or GELU); `shape`: the fast net's widths, depth, bn_mom (None: its own)"""
    if arch not in ARCHS: raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    options = {k: v for k, v in dict(act=act, **shape).items() if v is not None}
    return ARCHS[arch](n_out, width, **options)
