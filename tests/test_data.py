import numpy as np, pytest, torch
from fastai.vision.all import TensorImage
from recipe.data import AlbumentationsTransform, ImageCache, image_dls, decode, train_augs


@pytest.fixture(scope='module')
def dls(tiny): return image_dls(tiny, bs=16, seed=0)


def test_datablock_finds_classes_and_splits(dls):
    assert list(dls.vocab) == ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    assert (len(dls.train_ds), len(dls.valid_ds)) == (200, 50)
    assert all(f.parent.parent.name == 'train' for f in dls.train_ds.items)
    assert all(f.parent.parent.name == 'test' for f in dls.valid_ds.items)


def test_batches_are_normalized_float_images(dls):
    xb, yb = dls.one_batch()
    assert isinstance(xb, TensorImage) and xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32
    assert -0.5 < xb.mean() < 0.5 and 0.5 < xb.std() < 1.5  # CIFAR statistics applied
    assert yb.shape == (16,) and yb.max() < 10


def test_augmentation_on_training_split_only(dls):
    x_raw = dls.train_ds[0][0]  # Datasets apply type transforms only
    i = dls.train_ds.items[0]
    assert torch.equal(x_raw, TensorImage(torch.from_numpy(decode(i)).permute(2, 0, 1)))
    # each loader's before_iter gives its after_item pipeline the split it serves; set it here as that would, so the
    # test does not depend on an earlier test having iterated the loaders
    aug, valid_aug = dls.train.after_item, dls.valid.after_item
    aug.split_idx, valid_aug.split_idx = dls.train.dataset.split_idx, dls.valid.dataset.split_idx
    assert (aug.split_idx, valid_aug.split_idx) == (0, 1)
    augmented = [aug((x_raw, 0))[0] for _ in range(5)]
    assert all(a.shape == (3, 32, 32) and a.dtype == torch.uint8 for a in augmented)
    assert any(not torch.equal(a, x_raw) for a in augmented)
    x_test = dls.valid_ds[0][0]
    assert torch.equal(valid_aug((x_test, 0))[0], x_test)


def test_augmentation_keeps_the_cached_images_intact(tiny):
    files = sorted((tiny/'train').rglob('*.png'))[:8]
    cache = ImageCache(files)
    before = cache.arrays.copy()
    tfm = AlbumentationsTransform(train_augs(seed=0))
    for f in files: tfm(TensorImage(torch.from_numpy(cache(f)).permute(2, 0, 1)), split_idx=0)
    assert np.array_equal(cache.arrays, before)


def test_augmentation_has_one_mean_filled_cutout():
    img = np.zeros((32, 32, 3), np.uint8)  # a black image: only the cutout is not black
    out = train_augs(seed=1)(image=img)['image']
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    holes = (out != 0).all(2)
    assert holes.sum() == 64 and (out[holes] == (125, 123, 114)).all()


def test_seeded_augmentation_repeats():
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = [train_augs(seed=3)(image=img)['image'] for _ in range(2)]
    b = train_augs(seed=4)(image=img)['image']
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b)


def test_images_of_other_modes_and_sizes_are_converted(tmp_path):
    from PIL import Image
    Image.new('L', (64, 48), 200).save(tmp_path/'gray.png')
    Image.new('RGBA', (32, 32), (10, 20, 30, 40)).save(tmp_path/'rgba.png')
    for name in ('gray.png', 'rgba.png'):
        a = decode(tmp_path/name)
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_16_bit_images_keep_their_values_and_float_images_are_refused(tmp_path):
    "Pillow's convert('RGB') clips 16-bit values to white: a 16-bit PNG is read by its 16-bit range instead"
    from PIL import Image
    from recipe.errors import RecipeError
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path/'g16.png')
    assert Image.open(tmp_path/'g16.png').mode == 'I;16'
    a = decode(tmp_path/'g16.png')
    assert np.array_equal(a[..., 0], np.round(ramp / 257).astype(np.uint8)) and (a[..., 0] == a[..., 2]).all()
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path/'i32.tif')  # mode 'I', as Pillow before 10 opened 16-bit PNGs
    assert np.array_equal(decode(tmp_path/'i32.tif'), a)
    (tmp_path/'dark.pgm').write_bytes(b'P5\n2 1\n65535\n' + np.array([0, 255], '>u2').tobytes())  # 16-bit, opened as 'I'
    assert Image.open(tmp_path/'dark.pgm').mode == 'I' and decode(tmp_path/'dark.pgm', 2)[0, :, 0].tolist() == [0, 1]  # not white
    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path/'f.tif')
    with pytest.raises(RecipeError, match=r"cannot read image .*f\.tif: a floating-point image \(mode F"): decode(tmp_path/'f.tif')
