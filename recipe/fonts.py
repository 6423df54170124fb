"""Fonts for the plots: names in any script (class folders in Chinese, say) drawn with an installed font that has their
characters. Matplotlib only, so that the pages (`recipe runs`) draw without torch."""
import functools, logging, warnings
from contextlib import contextmanager

import matplotlib.pyplot as plt

__all__ = ['fallback_fonts', 'drawing']


@functools.cache
def fallback_fonts(texts: tuple) -> list:
    """The families of installed fonts that draw the characters of `texts` (class names, file names) that matplotlib's
    font lacks: Chinese class folders, say. A warning names what no installed font draws (shown as boxes)"""
    from matplotlib import font_manager
    from matplotlib.ft2font import FaceFlags, FT2Font
    def chars(path):  # what a font draws; nothing for a bitmap-only one (colour emoji), which matplotlib cannot size
        font = FT2Font(path)
        return set(font.get_charmap()) if FaceFlags.SCALABLE in font.face_flags else set()
    missing = {ord(c) for t in texts for c in str(t) if c.isprintable() and not c.isspace()} - chars(font_manager.findfont(font_manager.FontProperties()))
    families = []
    for font in font_manager.fontManager.ttflist:  # read only when a text needs it
        if not missing: break
        if font.name.startswith('Last Resort'): continue  # matplotlib's own: a box for every character
        try: has = missing & chars(font.fname)
        except (OSError, RuntimeError): continue  # a font file FreeType cannot read
        if has: families.append(font.name); missing -= has
    if missing: warnings.warn(f"no installed font draws {''.join(sorted(map(chr, missing)))} (in the class or file names): the plots "
                              "show boxes for them; install a font that has them (Debian: fonts-noto-cjk for Chinese, Japanese, Korean)")
    return families


@contextmanager
def drawing(texts):
    "Plots drawn inside show `texts` in any script an installed font has (matplotlib falls back along font.family)"
    extra = fallback_fonts(tuple(map(str, texts)))
    fonts_log = logging.getLogger('matplotlib.font_manager')
    level = fonts_log.level
    if extra: fonts_log.setLevel(logging.ERROR)  # "Failed to find font weight bold for X": it draws X's regular weight
    try:
        with plt.rc_context({'font.family': [*plt.rcParams['font.family'], *extra]}), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Glyph .* missing from font')  # one per glyph and plot: said once above
            yield
    finally: fonts_log.setLevel(level)
