"""recipe: CIFAR-10 with fastai, albumentations and a small custom ResNet (or a fast airbench94-style net), with the
plots that show what happened."""
__version__ = '0.1.0'
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # fastai 2.8 on torch 2.14: noise
from .config import *
from .model import CustomResNet, FastNet, make_model
from .augment import BatchAugment, batch_augment
from .data import RecipeError, image_dls, train_augs
from .seed import choose_lrs, find_lrs, fit_recipe
from .fast import fit_fast, fit_muon
from .settings import settings_for
from .run import make_learner, train
from .plots import plot_lr_find
from .inference import export_onnx, load, load_learner, predict
from .evaluation import evaluate
