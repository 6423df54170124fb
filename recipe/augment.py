"""Batched augmentation: reflect pad + random crop, flip and cutout on a whole uint8 batch, on the batch's device.

The per-item albumentations path spends most of its time in Python per image (~3,300 img/s on one core); here
each op is a few tensor ops over the batch. The random draws (offsets, flips, hole positions) come from torch's
generator of the batch's device: on a CPU the global one, so `set_seed` makes a run repeatable and a checkpoint's
torch RNG state resumes it; on a GPU the GPU's, so that no draw has to be copied to the device (each copy from
host memory waits for the GPU to finish its queue).
"""
import torch
import torch.nn.functional as F
from fastai.basics import TensorImage, Transform

__all__ = ['windows', 'batch_augment', 'BatchAugment', 'ColorJitter']


def windows(x, k):
    "Every k x k window of every image of `x` (B, C, H, W) as a view (B, H-k+1, W-k+1, C, k, k): no copy"
    B, C, H, W = x.shape
    s = x.stride()
    return x.as_strided((B, H - k + 1, W - k + 1, C, k, k), (s[0], s[2], s[3], s[1], s[2], s[3]))


def batch_augment(x, pad=4, flip=True, cutout=8, fill=(0, 0, 0)):
    """`x` (B, C, H, W) uint8 -> the same shape: reflect-pad by `pad` and crop back at a random offset (every one of
    the (2 pad + 1)^2 equally likely), flip half the images left-right, and fill one `cutout` x `cutout` square
    (inside the image) with `fill` (per channel). As the albumentations pipeline does, image by image."""
    B, C, H, W = x.shape
    dev = x.device
    idx = torch.arange(B, device=dev)
    padded = F.pad(x, (pad,) * 4, mode='reflect') if pad else x  # reflect = OpenCV's BORDER_REFLECT_101
    if flip:  # pick each image from the padded batch or its mirror: one gather does crop and flip
        padded = torch.cat([padded, padded.flip(-1)])
        idx = idx + B * (torch.rand(B, device=dev) < 0.5)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B), device=dev)
    out = windows(padded, H)[idx, dy, dx]  # (B, C, H, W)
    if cutout:
        cy, cx = torch.randint(0, H - cutout + 1, (2, B), device=dev)
        fill = torch.as_tensor(fill, dtype=x.dtype).view(C, 1, 1).to(dev)  # BatchAugment passes it on the device
        windows(out, cutout)[idx % B, cy, cx] = fill
    return out


class BatchAugment(Transform):
    "`batch_augment` as a fastai batch transform on uint8 images of the training split (before IntToFloatTensor)"
    split_idx, order = 0, 5  # training split only; IntToFloatTensor is order 10
    def __init__(self, pad=4, flip=True, cutout=8, fill=(0, 0, 0)):
        super().__init__()
        self.pad, self.flip, self.cutout, self.fill = pad, flip, cutout, tuple(fill)
    def encodes(self, x: TensorImage):
        if not isinstance(self.fill, torch.Tensor) or self.fill.device != x.device:  # once: a copy to a GPU waits for it
            self.fill = torch.tensor(self.fill, dtype=torch.uint8, device=x.device)
        out = batch_augment(x.as_subclass(torch.Tensor), self.pad, self.flip, self.cutout, self.fill)
        return out.as_subclass(type(x))


class ColorJitter(Transform):
    """Brightness and contrast jitter of the normalized training batch (after Hiverge's cifar10-speedrun): each image
    gets x + U(-brightness, brightness), then x U(1 - contrast, 1 + contrast), one draw per image, in units of the
    normalization's std. After Normalize (order 99): the shift is the same for every channel of the normalized image"""
    split_idx, order = 0, 100
    def __init__(self, brightness=0.1, contrast=0.1):
        super().__init__()
        self.brightness, self.contrast = brightness, contrast
    def encodes(self, x: TensorImage):
        shape = (len(x), 1, 1, 1)
        shift = (torch.rand(shape, device=x.device) * 2 - 1) * self.brightness
        scale = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * self.contrast
        return (x + shift.to(x.dtype)) * scale.to(x.dtype)
