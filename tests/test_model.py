import pytest, torch
from recipe import CustomResNet


def n_params(m): return sum(p.numel() for p in m.parameters())


def test_full_width_has_the_original_parameter_count():
    assert n_params(CustomResNet()) == 6_573_130


def test_logits_shape_at_any_width():
    for width, n_out in [(8, 10), (16, 3)]:
        y = CustomResNet(n_out, width)(torch.randn(4, 3, 32, 32))
        assert y.shape == (4, n_out)
        assert not torch.allclose(y.softmax(1).sum(1), y.sum(1))  # logits, not probabilities


def test_width_scales_every_layer():
    m = CustomResNet(width=8)
    convs = [l.out_channels for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    assert convs == [8, 16, 16, 16, 32, 64, 64, 64]
    assert m[-1].in_features == 64


@pytest.mark.parametrize('width', [0, -4, 2.5])
def test_bad_width_is_refused(width):
    with pytest.raises(ValueError, match='width'): CustomResNet(width=width)
