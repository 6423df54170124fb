"""Every default of the recipe in one place, each with its unit or source."""
__all__ = ['EPOCHS', 'BS', 'WIDTH', 'PEAK_AT', 'LRMAX_PER_MINIMUM', 'LR_RATIO', 'WD', 'CIFAR_MEAN', 'CIFAR_STD',
           'CIFAR_CLASSES', 'ACTIVATIONS', 'group_depths', 'PAD_TO', 'CROP', 'CUTOUT', 'DATA_ENV', 'AUGMENTS', 'DIST_TIMEOUT', 'VALID_PCT', 'SPLIT_SEED', 'WHITEN_SAMPLE', 'ECE_BINS',
           'STATS_SAMPLE', 'MEMORY_FRACTION', 'PEAK_COPIES',
           'SEED_PROFILE', 'FAST_SGD', 'FAST', 'TRIANGLE', 'at_batch', 'QUICK', 'FAST7', 'FAST_PROGRESSIVE', 'FAST95', 'FAST96', 'PROFILES', 'ABLATIONS', 'PRECISIONS']

EPOCHS = 24             # epochs of fit_one_cycle (the original write-up)
BS = 512                # images per batch (the original write-up)
WIDTH = 64              # channels of the PrepLayer; layers use 2x, 4x, 8x. 64 is the original (GPU) size
PEAK_AT = 5/24          # fraction of training at which the LR peaks: epoch 5 of 24
LRMAX_PER_MINIMUM = 3   # LRMAX = 3 x lr_find's `minimum` suggestion (= the LR of lowest loss / 3.3); docs/choices.md
LR_RATIO = 10           # LRMAX / LRMIN when one of them is derived (1e-3 -> 1e-2 in the write-up)
WD = 0.1                # decoupled (AdamW) weight decay, per unit of LR; see docs/choices.md
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel mean of the CIFAR-10 training set, in [0, 1]
CIFAR_STD = (0.2470, 0.2435, 0.2616)   # per-channel std of the CIFAR-10 training set, in [0, 1]
CIFAR_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
                        # data with exactly these classes, at 32x32, is normalized with CIFAR_MEAN/STD; any other
                        # with its own training images' mean and std
STATS_SAMPLE = 10_000   # images: at most this many training images (drawn at random) give a dataset's own mean/std
VALID_PCT = 0.2         # fraction of the images held out for validation when a folder has only class folders
SPLIT_SEED = 42         # seed of that random split: the same for every rank, every run and every resume
ECE_BINS = 15           # confidence bins of the expected calibration error and the reliability diagram (Guo et al. 2017)
WHITEN_SAMPLE = 5000    # training images (every class in proportion, drawn with SPLIT_SEED) that the fast net's
                        # whitening conv is computed from, as airbench's 5,000
MEMORY_FRACTION = 0.5   # of the memory available at the start: the most the decoded images may take in memory;
                        # above it (or `--max-memory`) images are decoded per item by worker processes instead. Each
                        # process of a distributed run on one machine gets its share (LOCAL_WORLD_SIZE)
PEAK_COPIES = 3         # the decoded images are held up to 3 times while loading: the decoded list, np.stack, the
                        # split tensors; the budget is checked against that peak
PAD_TO = 40             # pixels: training images are padded (reflect) to PAD_TO x PAD_TO ...
CROP = 32               # ... then randomly cropped back to CROP x CROP; also the default image size (--size)
CUTOUT = 8              # pixels: side of the one square hole, filled with the dataset mean
DATA_ENV = 'RECIPE_DATA'  # environment variable naming the data folder when `data` is not given
AUGMENTS = ('albumentations', 'batch')  # per item on the CPU (the seed's), or per batch on its device (recipe/augment.py)
ACTIVATIONS = ('relu', 'gelu', 'silu')  # the activations a net can be built with (`act`; recipe/model.py ACTS)
SMALL_BY = ('resize', 'crop')  # how small_early makes its small images (recipe/callbacks.py SmallEarly)


def group_depths(depth) -> tuple:
    "The fast net's convs in each of its 3 groups from `depth` (one for all, or one each); ValueError if not 2 or 3"
    depths = tuple(depth) if isinstance(depth, (tuple, list)) else (depth,) * 3
    if not (len(depths) == 3 and all(d in (2, 3) and not isinstance(d, bool) for d in depths)):
        raise ValueError(f"depth must be 2 or 3, or one of them for each of the 3 groups, got {depth!r}")
    return depths


DIST_TIMEOUT = 1800     # seconds a process waits for the others at a collective before the run stops with an error
                        # (PyTorch's default): the others wait while rank 0 runs lr_find, which takes minutes on a CPU

TRIANGLE = (0.2, 0.23, 0.07)  # Nesterov LR schedule: from 0.2 x lr_max up to lr_max at 23% of training, down to 0.07 x

# Profiles: every setting of a run, by name (`train --profile NAME`, `bench NAME`); options given on the command
# line or to `recipe.train` override them. 'lr_min'/'lr_max' None: from lr_find.
SEED_PROFILE = dict(
    arch='resnet',          # the custom ResNet (recipe/model.py)
    act=None,               # the net's activation: one of ACTIVATIONS; None: the net's own
                            # (ReLU in the custom ResNet, GELU in the fast net)
    widths=None,            # (fast net only) its three groups' channels; None: (width, 4 width, 4 width)
    depth=2,                # (fast net only) convs per group: 2, or 3 with a residual over the last two (airbench96);
                            # or one of them for each of the 3 groups
    bn_mom=0.4,             # (fast net only) PyTorch momentum of its BatchNorm statistics
    width=WIDTH, epochs=EPOCHS, bs=BS,
    size=CROP,              # pixels: images are resized to size x size; pad and cutout below are at 32 and scale with it
    augment='albumentations',  # per item on the CPU; 'batch': recipe/augment.py on the batch's device
    pad=(PAD_TO - CROP) // 2,  # pixels of reflect padding before the random crop (batch augmentation)
    flip=True,              # random horizontal flip; 'alternate': airbench's alternating flip (batch path only)
    cutout=CUTOUT,          # pixels: side of the one square hole (0: none)
    small_early=None,       # (pixels, epochs): the first `epochs` epochs train on images made `pixels` wide (progressive
                            # resizing, recipe/callbacks.py SmallEarly), ~(pixels/size)^2 of the arithmetic; stages in
                            # the order they train: ((24, 3), (28, 2)) 3 epochs at 24, then 2 at 28; None: none
    small_by='resize',      # how small_early makes its images: 'resize' them, or 'crop' a random window of each
    prune_easy=None,        # (augment 'batch', one process) InfoBatch: each epoch but the first and the last 12.5% leaves out
                            # this share of the images whose last loss is under the mean (recipe/callbacks.py PruneEasy); None: none
    clean_last=0,           # (batch augmentation only) the last this many epochs train without translation, cutout and
                            # jitter, on images as the test sees them (the flip stays: TTA mirrors too); 0: none
    self_distill=None,      # (augment 'batch', one process, no prune_easy) PS-KD: each target mixes in the net's own prediction
                            # of the epoch before, its weight growing linearly from 0 at the first epoch to this value at the
                            # last (recipe/callbacks.py SelfDistill); None: none
    jitter=None,            # (batch augmentation only) (brightness, contrast): each normalized training image + U(-b, b),
                            # then x U(1-c, 1+c) (recipe/augment.py, ColorJitter); None: none
    opt='adam',             # fastai's Adam with decoupled weight decay `wd`; fit_one_cycle
    schedule=TRIANGLE,      # (Nesterov SGD only) the LR triangle (start, peak_at, end): from start x lr_max up to lr_max
                            # at peak_at (a fraction of training), down to end x lr_max
    lr_min=None, lr_max=None, wd=WD,
    mom=None,               # (Nesterov SGD and Muon only) momentum of the optimizer of lr_max
    bias_lr=1,              # LR multiplier of the BatchNorm biases
    sgd_lr=None,            # (Muon only) LR of the Nesterov SGD of the biases (BatchNorm and whitening), mean loss
    head_lr=None,           # (Muon only) LR of the Nesterov SGD of the final linear layer, mean loss
    sgd_mom=None,           # (Muon only) momentum of that Nesterov SGD
    renorm_every=1,         # (Muon only) steps between rescaling each filter bank to norm sqrt(out channels)
    filter_wd=0.,           # (Muon only) the filters shrink by LR x filter_wd after every step (Hiverge's 1.6e-3)
    label_smoothing=0.0,
    lookahead=False,        # lookahead of the weights (recipe/fast.py)
    whiten=False,           # (fast net only) first conv frozen as a whitening of 2x2 patches; False: trained from random
    whiten_bias_epochs=0,   # (fast net only) epochs during which the whitening conv's bias is trained
    freeze_at=None,         # (fast net only) (epoch, ...): conv group 1 stops training at the first epoch, group 2 at the
                            # second, ... (FreezeOut; fractions allowed; recipe/callbacks.py FreezeGroup); None: never
    identity_init=True,     # (fast net only) its convs start as the identity (Dirac); False: PyTorch's default init
    tta=0,                  # test-time augmentation level of the reported accuracy (0 none, 1 mirror, 2 + translate)
    tta_below=None,         # only images whose top class has a probability below this get TTA (None: every image)
    test_every=1,           # a test pass after every `test_every`-th epoch and after the last; 0: after the last only. A pass
                            # over CIFAR-10's test set costs ~6% of a 32-pixel epoch on a CPU (recipe/callbacks.py, SkipTestPasses)
    precision='auto',       # 'fp32', 'bf16', 'fp16' (CUDA) or 'auto': bf16 (else fp16) mixed on CUDA; on a CPU, bf16 autocast
                            # where it has bf16 instructions, else fp32 (recipe/run.py, choose_precision). Measured on a
                            # bf16 CPU (bench/results/precision/): an epoch of the seed profile 1.94x, a step of the fast
                            # net 1.75x as fast as fp32; the seed profile's 24 epochs in bf16 reached 92.70%
    compile=False,          # torch.compile the net (Inductor): it costs a compile at the start; bench/compile_speed.py
                            # measures when it pays back
)
PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
# After airbench94 (Keller Jordan, github.com/KellerJordan/cifar10-airbench): his hyperparameters, turned from his
# summed loss into fastai's mean loss. LRs are fixed: they were tuned there; lr_find is not run.
FAST_SGD = SEED_PROFILE | dict(
    arch='fast',            # the airbench94-style net (recipe/model.py): widths 64/256/256
    width=64, epochs=12,    # airbench94 trains 9.9 epochs for 94.0% on average; 12 for a margin over 3 seeds
    bs=1024,                # airbench94's batch
    augment='batch', pad=2, flip=True, cutout=0,  # translate by up to 2 pixels (reflect) and flip; no cutout
    opt='nesterov',         # SGD, Nesterov momentum, coupled L2, LR schedule `TRIANGLE`
    lr_max=1.5,             # peak LR per mean-loss gradient at bs 1024 (airbench: 11.5 per 1024 summed examples / 7.67)
    wd=0.002,               # L2 x LR: the weights shrink by this fraction per step at the peak LR, before momentum
    mom=0.85,               # Nesterov momentum
    bias_lr=64,             # BatchNorm biases learn 64x faster (airbench's bias_scaler); their L2 is divided by it
    label_smoothing=0.2,
    lookahead=True,         # every 5 steps, decay 0.95^5 x progress^3
    whiten=True, whiten_bias_epochs=3,
    tta=2,                  # mirror + 1-pixel translates, in the reported accuracy and wall time
)
# After airbench94_muon (the same repository): Muon for the conv filters, Nesterov SGD for the rest, linear decay to 0,
# the alternating flip, no lookahead. LRs turned from its summed loss over 2,000 images into fastai's mean loss (SGD
# LRs x 2,000; Muon's step does not depend on the gradient's scale); the head's LR also for our logit scale of 1/9
# instead of its 1/256 (an LR on W acts as LR x scale^2 on the logits' weights).
FAST = FAST_SGD | dict(
    epochs=8,               # airbench94_muon's 8 epochs for 94.0% on average
    bs=2000,                # its batch
    opt='muon',             # Muon for conv filters (recipe/fast.py), Nesterov SGD for biases and head; `linear_decay`
    lr_max=0.24,            # Muon's LR: each step moves the filters by about this fraction of their norm
    mom=0.6,                # Muon's Nesterov momentum
    sgd_lr=106,             # biases (BatchNorm, whitening): 0.053 per 2,000 summed examples
    head_lr=1.66,           # final linear layer: 0.67 per 2,000 summed examples, x (9/256)^2 for our logit scale
    sgd_mom=0.85,
    wd=0.004,               # L2 x LR of the SGD groups at their initial LR: 2e-6 per summed example x 2,000
    bias_lr=1, lookahead=False, flip='alternate',
)


def at_batch(bs) -> dict:
    """Hiverge's optimizer settings at batch `bs`, turned into our mean loss: the SGD groups' LRs and weight decay per
    summed example as its 1,536 have them; Muon's LR x sqrt(bs / 1,536), as airbench94_muon -> Hiverge went (0.24 at
    2,000 -> 0.205 at 1,536, roughly so)"""
    return dict(bs=bs, lr_max=0.205 * (bs / 1536) ** 0.5, sgd_lr=0.0573 * bs, head_lr=0.5415 * bs * (9/256)**2,
                wd=1.0418e-6 * bs)


# One change to a profile at a time (`bench PROFILE --ablation NAME`): an ingredient of the fast profiles removed, for
# "what each bought", or a candidate added (issue 23: Hiverge's cifar10-speedrun, github.com/hiverge/cifar10-speedrun)
ABLATIONS = {
    'no-lookahead':       dict(lookahead=False),
    'random-flip':        dict(flip=True),                           # each image flipped at random each epoch
    'alternate-flip':     dict(flip='alternate'),                    # (fast-sgd) the other way round: airbench's flip
    'sgd':                dict(opt='nesterov', lr_max=FAST_SGD['lr_max'], mom=FAST_SGD['mom'], bias_lr=FAST_SGD['bias_lr'],
                               wd=FAST_SGD['wd'], schedule=TRIANGLE),  # Nesterov SGD for the filters too, on TRIANGLE
    'no-label-smoothing': dict(label_smoothing=0.0),
    'no-whitening':       dict(whiten=False, whiten_bias_epochs=0),  # the first conv trained from a random init
    'no-bias-lr':         dict(bias_lr=1),                           # BatchNorm biases at the LR of the rest
    'no-identity-init':   dict(identity_init=False),                 # the convs start from PyTorch's default init
    'fp32':               dict(precision='fp32'),                    # no bf16 autocast on the CPU
    'adam':               dict(opt='adam', wd=WD, lr_max=None),      # fastai's Adam with the seed's one cycle and lr_find
    # candidates, each on its own
    'silu':               dict(act='silu'),                          # SiLU in the conv groups instead of GELU
    'ls-0.09':            dict(label_smoothing=0.09),                # label smoothing 0.09 instead of 0.2
    'ls-0.2':             dict(label_smoothing=0.2),                 # (on fast7's descendants) back to airbench94's 0.2: 0.09 won a 3-epoch screen
    'whiten-bias-0.19':   dict(whiten_bias_epochs=0.19),             # the whitening bias learns for 0.19 epoch, not 3
    'whiten-bias-8':      dict(whiten_bias_epochs=8),                # (on fast-progressive's 8 epochs) the bias learns all 8, not only the
                                                                     # 3 at 24 pixels: frozen after them, it was fitted to the small
                                                                     # images' statistics; its input gradient costs ~4% of a step
    'whiten-bias-2':      dict(whiten_bias_epochs=2),                # (on fast-progressive's 10 epochs) the bias learns in its 2 epochs
                                                                     # at 24 pixels only, not also in the first at 32 (airbench94's 3):
                                                                     # 93.97% over 5 seeds, paired -0.14: a loss
    'jitter':             dict(jitter=(0.14, 0.13)),                 # brightness and contrast jitter (in std units)
    'no-jitter':          dict(jitter=None),                         # (on fast7's descendants) without it: it won a 3-epoch
                                                                     # screen; on fast-progressive 93.92% over 6 seeds, no sign of a gain
    'small-early':        dict(small_early=(24, 1)),                 # the first epoch at 24x24 pixels: 0.52 of its multiply-adds
                                                                     # (0.56 by pixel count, the unit of the arithmetic below)
    'small-early-2':      dict(small_early=(24, 2)),                 # the first 2 epochs at 24x24 (fast-progressive's)
    'small-early-3':      dict(small_early=(24, 3)),                 # the first 3 epochs at 24x24 (fast-progressive's for 8 epochs
                                                                     # until 2026-12-06)
    'small-early-20-3':   dict(small_early=(20, 3)),                 # the first 3 epochs at 20x20: 0.39 of their FLOPs
    'full-first-small-3': dict(small_early=((32, 1), (24, 3))),      # fast-progressive's 3 epochs at 24 after a first one at full
                                                                     # size (6.56 full-size epochs, as the 8-epoch profile's): does the
                                                                     # net's first epoch need the images the test will show?
    'small-early-4':      dict(small_early=(24, 4)),                 # the first 4 epochs at 24x24 (in 8 epochs: 6.25 full-
                                                                     # size epochs by pixel count; small-early-3 6.69, -2 7.13)
    'small-early-3-28-2': dict(small_early=((24, 3), (28, 2))),      # 3 epochs at 24, then 2 at 28 (6.22 full-size epochs'
                                                                     # arithmetic in 8, 0.93x small-early-3's)
    'small-early-3-28-3': dict(small_early=((24, 3), (28, 3))),      # 3 at 24, then 3 at 28 (5.98, 0.89x)
    'crop-3-28-3':        dict(small_early=((24, 3), (28, 3)), small_by='crop'),  # the same stages in random windows of
                                                                     # each image (their scale kept), not resized
    'crop-3-28-2':        dict(small_early=((24, 3), (28, 2)), small_by='crop'),  # 2 crop epochs at 28, not 3 (6.22)
    'crop-4':             dict(small_early=(24, 4), small_by='crop'),  # small-early-4's stage as crops (6.25)
    'crop-3':             dict(small_early=(24, 3), small_by='crop'),  # fast-progressive's 8-epoch stage as crops (6.69):
                                                                     # 93.94% over 8 seeds, no sign of a gain
    'prune-easy-0.5':     dict(prune_easy=0.5),                      # InfoBatch: half the easy images out of epochs 1-6 of 8
    'freeze-1-at-5':      dict(freeze_at=(5,)),                      # the first conv group frozen for the last 3 of 8 epochs
    'freeze-at-5-7':      dict(freeze_at=(5, 7)),                    # ... and the second for the last
    'clean-last-1':       dict(clean_last=1),                        # the last epoch without translation, cutout or jitter (He et al.
                                                                     # 2019, "Data Augmentation Revisited": the augmented and the
                                                                     # clean images' distributions differ, so train on clean images last).
                                                                     # On fast-progressive: 93.98% over 15 seeds, no sign of a gain;
                                                                     # with group2-192 for 10 epochs 93.92% over 5, below both parts
    'self-distill-0.5':   dict(self_distill=0.5),                    # PS-KD (Kim et al. 2021): the net's own predictions of the
                                                                     # epoch before make up to half of each target; no extra
                                                                     # arithmetic. On fast-progressive 93.49% over 2 seeds: TTA
                                                                     # adds about half as much as on the profile
    'tta-below-0.8':      dict(tta_below=0.8),                       # TTA for the images under 0.8 top probability only
    'test-last':          dict(test_every=0),                        # the test pass after the last epoch only
    'test-every-epoch':   dict(test_every=1),                        # a test pass after every epoch (the accuracy curve)
    'hiverge-opt':        at_batch(1536) | dict(mom=0.655, sgd_mom=0.825),  # its batch, LRs, momenta and the SGD groups'
                                                                     # weight decay (not its decay of the filters)
    # (on fast7) more steps an epoch, since a CPU runs smaller batches nearly as fast
    'bs-1024':            at_batch(1024),
    'bs-512':             at_batch(512),
    'lookahead':          dict(lookahead=True),                      # (on fast7) airbench94's lookahead, which Muon's dropped
    # (on fast-progressive) a narrower net for more epochs: on a CPU time follows arithmetic, and groups 2-3 at 192
    # channels make the net 0.70x the multiply-adds (a 32-pixel step 0.74x the time: bench/width_speed.py); airbench's
    # widths were chosen for a GPU's time. At another --width, its widths scale with it
    'widths-192':         dict(widths=(64, 192, 192)),
    'group3-192':         dict(widths=(64, 256, 192)),                # only the last group of 64/256/256 narrowed: 0.92x the multiply-adds
    # the other way: the last group wider (fast95's wider net reaches 95% in 15 epochs); 64/256/384 is 1.18x the
    # multiply-adds at 32 pixels, 1.17x at 24 (bench/width_speed.py). Each of these width entries sets all three widths
    # outright: on fast-progressive (group 2 at 192 since 2026-12-06) `group3-384` and `group3-192` put group 2 back to 256
    'group3-384':         dict(widths=(64, 256, 384)),
    # the middle group narrower, the last kept: 64/192/256 is 0.76x the multiply-adds (its first conv, 64 -> 256 at
    # 15x15, is the net's largest), a step 0.83x the time, for more epochs in the same time
    'group2-192':         dict(widths=(64, 192, 256)),                # (fast-progressive's since 2026-12-06, for 10 epochs)
    # the first group narrower too (on fast-progressive, with `--epochs 11`): 64 -> 48 channels makes a 32-pixel step
    # 0.90x the time of 64/192/256 on the AMX Xeon (its convs at 31x31 and 15x15 and its pool are bound by memory there)
    # and the net 0.85x its multiply-adds, so an 11th epoch costs about what it saves (6.53 full-size epochs'
    # arithmetic by `python bench/arithmetic_curve.py`). With `--epochs 11`: 93.93% over 15 seeds, paired -0.07
    # (standard error 0.05) against the profile at 49cd79b (docs/results.md): no gain
    'group1-48':          dict(widths=(48, 192, 256)),
    # Muon's LR, never tuned here before (fast7's is Hiverge's 0.205 at batch 1,536 for 7.63 epochs; its descendants train
    # 8-10). With group2-192 for 10 epochs, 3 seeds each: 0.8x 93.96%, 1.25x 93.84%, against 94.04% at 0.205 (docs/results.md)
    'muon-lr-0.8x':       dict(lr_max=0.164),
    'muon-lr-1.25x':      dict(lr_max=0.256),
    # (on fast-progressive) depth where it is cheapest: a third conv, with airbench96's residual over the last two, in the
    # last group only, on its 3x3 maps (2x2 at 24 pixels): 1.045x the multiply-adds, 6.85 full-size epochs' arithmetic in
    # fast-progressive's 8 epochs of then (7.29 in its 10 now: over issue 23's 7)
    'group3-depth-3':     dict(depth=(2, 2, 3)),
    'hiverge-muon':       dict(renorm_every=8, filter_wd=1.0418e-6 * 1536, bn_mom=0.4434),  # its filters rescaled every 8th
                                                                     # step with weight decay between, its BatchNorm momentum (on
                                                                     # fast-progressive: 93.93% over 10 seeds, no sign of a gain)
}
# The fast profile in 7 epochs with the candidates that helped on their own in the 3-epoch screen (issue 23,
# docs/results.md; quick was then the fast profile for 3 epochs): Hiverge's batch and optimizer settings, its label
# smoothing and its brightness/contrast jitter
FAST7 = FAST | dict(epochs=7) | ABLATIONS['hiverge-opt'] | ABLATIONS['ls-0.09'] | ABLATIONS['jitter']
# 94% for fewer FLOPs than fast7 (issue 23, part 1): fast7's training for 10 epochs, the first 2 on images resized to 24
# pixels (progressive resizing, as fastai's DAWNBench ImageNet entry), with group 2 at 192 channels (0.76x the net's
# multiply-adds: its first conv, 64 -> 256 at 15x15, is the largest): 6.89 epochs' arithmetic of the 64/256/256 net at 32
# pixels, by multiply-adds. docs/results.md: 94.06% over seeds 0-14 (2026-12-06), paired by seed +0.12 against its
# setting before, fast7's training for 8 epochs with the first 3 at 24 (`small-early-3`, 6.56): 93.96% over 29 runs. With
# 3 epochs at 24 instead (6.53) for 3 runs on 2026-12-05: 93.98% over 13 seeds; with 2 at 24 for 8 epochs (7.04) for
# 15 seeds on 2026-12-05: 93.97%.
# The fast profile's own training (airbench94_muon's settings, no jitter, smoothing 0.2) with 3 epochs at 24 for 8:
# 93.91% over 15 seeds on 2026-12-05 (`bench fast --ablation small-early-3,...`): no sign of a gain.
# For the least wall time (part 2): TTA for the images under 0.8 confidence only, and one test pass, after the last epoch
# (neither changes the training: the same weights as with TTA on all and a test pass every epoch)
FAST_PROGRESSIVE = (FAST7 | dict(epochs=10) | ABLATIONS['group2-192'] | ABLATIONS['small-early-2'] | ABLATIONS['tta-below-0.8']
                    | ABLATIONS['test-last'])
# 90% as soon as possible (issue 23, part 6): fast7's training in 2 epochs, at batch 512 for 3x its steps (89.23% at
# 1,536, 89.72% at 1,024, 90.62% at 512 on seed 0; docs/results.md); TTA for the 38% of the images under 0.8 confidence
# only: the same accuracy as TTA on all (seeds 0-1, paired; docs/results.md), for 0.38 of its extra views
QUICK = FAST7 | at_batch(512) | dict(epochs=2) | ABLATIONS['tta-below-0.8']
# After airbench95 and airbench96 (legacy/ in the same repository: 95.01% in 15 epochs and 96.03% in 37 epochs on
# average, on an A100): airbench94's training (FAST_SGD) with wider nets, their LRs and weight decays turned the same way
# (x 1 / NESTEROV_GAIN per 1024 summed examples), and airbench's alternating flip.
NESTEROV_GAIN = 1 + 1 / (1 - 0.85)  # 7.67: how much larger than the gradient Nesterov steps at momentum 0.85 are
FAST95 = FAST_SGD | dict(
    width=128, widths=(128, 384, 384), epochs=15,
    lr_max=10.0 / NESTEROV_GAIN,  # airbench95: 10.0 per 1024 summed examples
    flip='alternate',       # airbench95: 94.95% with a random flip instead
)
FAST96 = FAST_SGD | dict(
    width=128, widths=(128, 384, 512), depth=3, bn_mom=0.1, epochs=37,
    lr_max=9.0 / NESTEROV_GAIN, wd=0.012 / NESTEROV_GAIN,  # airbench96: 9.0 and 0.012 per 1024 summed examples
    schedule=(0.2, 0.1, 0.0),  # up to the peak over the first 10% of training, then down to 0
    pad=4, cutout=12,       # translate by up to 4 pixels, a 12-pixel hole
    flip='alternate',
)
PROFILES = {
    'seed':     SEED_PROFILE | dict(doc='the original recipe exactly (width 64: a GPU configuration, ~5 h per run on 2 CPU cores)'),
    'seed-w32': SEED_PROFILE | dict(width=32, doc='the original recipe at width 32: a quarter of the compute'),
    'fast':     FAST | dict(doc='airbench94_muon-style net and training (Muon) in fastai, for 94%'),
    'quick':    QUICK | dict(doc="fast7's training at batch 512 for 2 epochs, TTA on the images under 0.8 confidence, for 90% as soon as possible"),
    'fast-sgd': FAST_SGD | dict(doc='the fast profile before Muon: airbench94-style Nesterov SGD, 12 epochs'),
    'fast7':    FAST7 | dict(doc='the fast profile in 7 epochs with the changes that helped in the 3-epoch screen (issue 23)'),
    'fast-progressive': FAST_PROGRESSIVE | dict(doc="fast7's training for 10 epochs, the first 2 at 24 pixels, group 2 at 192 channels: 6.9 epochs' arithmetic, for 94% in the least time"),
    'fast95':   FAST95 | dict(doc='after airbench95 (widths 128/384/384, 15 epochs), for 95%'),
    'fast96':   FAST96 | dict(doc='after airbench96 (widths 128/384/512, 3 convs a group, 37 epochs), for 96%: a GPU profile'),
}
