"""Batched augmentation: the same statistics as the albumentations pipeline on the same images, and in the loader
it touches the training split only."""
import numpy as np
import pytest
import torch

import recipe
from recipe.augment import batch_augment

N = 3000
FILL = tuple(round(255*m) for m in recipe.CIFAR_MEAN)  # (125, 123, 114): no coded pixel has R = 125


def coded_image():
    "A 32x32 RGB image whose pixels name their source: R = row, G = column, B = 200"
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing='ij')
    return np.stack([r, c, np.full_like(r, 200)], -1).astype(np.uint8)  # (32, 32, 3)


def statistics(out):
    """From augmented coded images (N, 32, 32, 3): the crop's row/column offset (read at the centre, where reflection
    cannot fold), whether it was flipped, and each cutout hole's pixel count and bounding box"""
    centre = out[:, 16, 16].astype(int)
    flipped = out[:, 16, 17, 1].astype(int) < out[:, 16, 15, 1].astype(int)   # columns run backwards
    dy = centre[:, 0] - 16
    dx = np.where(flipped, 15 - centre[:, 1], centre[:, 1] - 16)                # mirrored: column 31 - x
    hole = (out == np.array(FILL, np.uint8)).all(-1)                            # (N, 32, 32)
    rows, cols = hole.any(2), hole.any(1)
    height, width = rows.sum(1), cols.sum(1)
    return dict(dy=dy, dx=dx, flipped=flipped, hole_pixels=hole.sum((1, 2)), height=height, width=width,
                top=rows.argmax(1), left=cols.argmax(1))


@pytest.fixture(scope='module')
def both():
    img = coded_image()
    pipeline = recipe.train_augs(seed=0)
    alb = np.stack([pipeline(image=img)['image'] for _ in range(N)])
    torch.manual_seed(0)
    batch = torch.from_numpy(img).permute(2, 0, 1)[None].expand(N, -1, -1, -1).contiguous()
    ours = batch_augment(batch, pad=4, flip=True, cutout=8, fill=FILL).permute(0, 2, 3, 1).numpy()
    return {name: statistics(out) for name, out in (('albumentations', alb), ('batch', ours))}


@pytest.mark.parametrize('key', ['dy', 'dx'])
def test_crop_offsets_cover_the_whole_range_uniformly_in_both(both, key):
    for name, s in both.items():
        ok = (s['top'] > 17) | (s['top'] + s['height'] <= 15) | (s['left'] > 17) | (s['left'] + s['width'] <= 15)  # centre not hidden
        values, counts = np.unique(s[key][ok], return_counts=True)
        assert list(values) == list(range(-4, 5)), (name, values)          # every offset of pad 4, nothing else
        assert counts.min() > 0.6 * ok.sum() / 9, (name, counts)           # roughly uniform


def test_flip_rate_is_one_half_in_both(both):
    for name, s in both.items():
        assert 0.45 < s['flipped'].mean() < 0.55, name


def test_one_8x8_hole_inside_the_image_filled_with_the_mean_in_both(both):
    for name, s in both.items():
        assert (s['hole_pixels'] == 64).all(), name                        # a whole 8x8 square, every time
        assert (s['height'] == 8).all() and (s['width'] == 8).all(), name
        for key in ('top', 'left'):                                        # anywhere inside, edges included
            assert s[key].min() == 0 and s[key].max() == 24, (name, key)


def test_batch_augmentation_is_repeatable_with_a_seed_and_varies_without():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(1); a = batch_augment(x)
    torch.manual_seed(1); b = batch_augment(x)
    assert torch.equal(a, b) and not torch.equal(a, batch_augment(x))


def test_batch_loader_augments_training_batches_only(tiny):
    dls = recipe.image_dls(tiny, bs=50, seed=0, augment='batch', pad=2, cutout=0)
    images, labels = dls.train.images, dls.train.labels
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.uint8
    assert [dls.vocab[int(y)] for y in labels[:3]] == [f.parent.name for f in dls.train_ds.items[:3]]
    x, y = dls.valid.one_batch()
    assert x.device == recipe.data.default_device()                            # fastai's default device, as for albumentations
    x = x.cpu()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (recipe.CIFAR_MEAN, recipe.CIFAR_STD))
    assert torch.allclose(x, (dls.valid.images[:50].float() / 255 - mean) / std, atol=1e-6)  # test images as they are
    assert len(dls.train) == 4 and sum(len(b[0]) for b in dls.valid) == 50      # drop_last on training only
    x, _ = dls.train.one_batch()
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32
    # training batches are augmented: few images come out as they are (no shift and no flip: 1 in 50)
    raw = (dls.train.images.float() / 255 - mean) / std
    as_they_are = ((x.cpu()[:, None] - raw[None]).abs().amax(dim=(2, 3, 4)) < 1e-5).any(1)
    assert as_they_are.sum() <= 10


def test_unknown_augment_is_refused(tiny):
    with pytest.raises(recipe.RecipeError, match="augment must be one of albumentations, batch, got 'gpu'"):
        recipe.image_dls(tiny, augment='gpu')


def draws(device, B, H, pad=4, cutout=8):
    "The draws batch_augment makes, in its order, from the generator of `device` (flip, dy, dx, cutout row, column)"
    flip = torch.rand(B, device=device) < 0.5
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B), device=device)
    cy, cx = torch.randint(0, H - cutout + 1, (2, B), device=device)
    return [t.cpu().numpy() for t in (flip, dy, dx, cy, cx)]


def image_by_image(x, flip, dy, dx, cy, cx, pad=4, cutout=8, fill=FILL):
    "The augmentation with given draws, one image at a time in NumPy: pad (reflect), mirror, crop, fill the hole"
    out = []
    for i, img in enumerate(x.numpy()):
        p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode='reflect')  # NumPy's reflect = OpenCV's BORDER_REFLECT_101
        if flip[i]: p = p[:, :, ::-1]
        crop = p[:, dy[i]:dy[i] + img.shape[1], dx[i]:dx[i] + img.shape[2]].copy()
        crop[:, cy[i]:cy[i] + cutout, cx[i]:cx[i] + cutout] = np.array(fill, np.uint8)[:, None, None]
        out.append(crop)
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU: run by bench/gpu_check.sh'))])
def test_batch_augmentation_is_the_per_image_ops_with_the_draws_of_the_batchs_device(device):
    "The draws come from the generator of the batch's device (on a GPU the GPU's: no copy from the host per batch)"
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(2); out = batch_augment(x.to(device), fill=FILL)
    torch.manual_seed(2); expected = image_by_image(x, *draws(device, 256, 32))
    assert out.device.type == device and torch.equal(out.cpu(), expected)
