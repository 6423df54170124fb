"""recipe: CIFAR-10 with fastai, albumentations and a small custom ResNet (or a fast airbench94-style net), with the
plots that show what happened.

The settings (recipe/config.py) and RecipeError come at once; the rest on first use, so that `python -m recipe runs`,
`show` and `--help` start without importing torch and fastai (about 8 s of CPU)."""
__version__ = '0.1.0'
import importlib, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # fastai 2.8 on torch 2.14: noise
from .config import *
from .config import __all__ as _settings
from .errors import RecipeError

LAZY = {  # module: the names it gives the package
    'model': ['CustomResNet', 'FastNet', 'make_model'],
    'augment': ['BatchAugment', 'batch_augment'],
    'data': ['image_dls', 'train_augs'],
    'seed': ['choose_lrs', 'find_lrs', 'fit_recipe'],
    'fast': ['fit_fast', 'fit_muon'],
    'settings': ['settings_for'],
    'run': ['make_learner', 'train'],
    'plots': ['plot_lr_find'],
    'inference': ['export_onnx', 'image_files', 'load', 'load_learner', 'predict'],
    'evaluation': ['evaluate'],
}
HOME = {name: module for module, names in LAZY.items() for name in names}
__all__ = [*_settings, 'RecipeError', *HOME]


def __getattr__(name):
    "An export, or a module by name (`recipe.data.find_data` after `import recipe`), imported on first use"
    if name in HOME: value = getattr(importlib.import_module(f'.{HOME[name]}', __name__), name)
    elif (Path(__file__).parent/f'{name}.py').is_file(): value = importlib.import_module(f'.{name}', __name__)
    else: raise AttributeError(f"module 'recipe' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__(): return sorted(set(globals()) | set(HOME))
