"""Every default of the recipe in one place, each with its unit or source."""
__all__ = ['EPOCHS', 'BS', 'WIDTH', 'PEAK_AT', 'LRMAX_PER_MINIMUM', 'LR_RATIO', 'WD', 'CIFAR_MEAN', 'CIFAR_STD',
           'PAD_TO', 'CROP', 'CUTOUT', 'DATA_ENV']

EPOCHS = 24             # epochs of fit_one_cycle (the original write-up)
BS = 512                # images per batch (the original write-up)
WIDTH = 64              # channels of the PrepLayer; layers use 2x, 4x, 8x. 64 is the original (GPU) size
PEAK_AT = 5/24          # fraction of training at which the LR peaks: epoch 5 of 24
LRMAX_PER_MINIMUM = 3   # LRMAX = 3 x lr_find's `minimum` suggestion (= the LR of lowest loss / 3.3); README "Choices"
LR_RATIO = 10           # LRMAX / LRMIN when one of them is derived (1e-3 -> 1e-2 in the write-up)
WD = 0.1                # decoupled (AdamW) weight decay, per unit of LR; see README "Choices"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel mean of the CIFAR-10 training set, in [0, 1]
CIFAR_STD = (0.2470, 0.2435, 0.2616)   # per-channel std of the CIFAR-10 training set, in [0, 1]
PAD_TO = 40             # pixels: training images are padded (reflect) to PAD_TO x PAD_TO ...
CROP = 32               # ... then randomly cropped back to CROP x CROP
CUTOUT = 8              # pixels: side of the one square hole, filled with the dataset mean
DATA_ENV = 'RECIPE_DATA'  # environment variable naming the data folder when `data` is not given
