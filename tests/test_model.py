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


@pytest.mark.parametrize('size', [2, 3, 5, 7])
@pytest.mark.parametrize('rows', [6272, 60])  # at 60 rows a product: 1-15 images a chunk, the last one shorter
def test_weight_grads_by_shifts_are_the_convs_own(size, rows, monkeypatch):
    "SmallMapConv's shifted products (bf16 autocast on the CPU) give nn.Conv2d's output and gradients, to bf16's rounding"
    from recipe.model import SmallMapConv, WeightGradByShifts
    monkeypatch.setattr(WeightGradByShifts, 'ROWS', rows)
    torch.manual_seed(0)
    plain, shifted = torch.nn.Conv2d(16, 24, 3, padding=1, bias=False), SmallMapConv(16, 24, 3, padding=1, bias=False)
    shifted.weight.data.copy_(plain.weight.data)
    shifted.by_shifts = True
    x = torch.randn(7, 16, size, size).to(memory_format=torch.channels_last)
    weights = torch.randn(7, 24, size, size)  # a loss whose gradient differs at every output
    found = []
    for conv in (plain, shifted):
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16): y = conv(xi)
        (y.float() * weights).sum().backward()
        found.append((y.float(), xi.grad, conv.weight.grad, y.grad_fn.name()))
    (y0, dx0, dw0, fn0), (y1, dx1, dw1, fn1) = found
    assert 'WeightGradByShifts' in fn1 and 'WeightGradByShifts' not in fn0  # the shifted route was taken
    assert torch.equal(y0, y1) and torch.equal(dx0, dx1)  # the same oneDNN forward and input gradient
    assert dw1.dtype == torch.float32 and ((dw1 - dw0).norm() / dw0.norm()) < 1e-2  # bf16 sums in another order


def test_weight_grads_by_shifts_only_while_training_on_small_maps(monkeypatch):
    "Inference, maps over 7x7 (oneDNN is faster there), fp32 and convs of another shape keep the ordinary route"
    from recipe.model import SmallMapConv, WeightGradByShifts
    calls = []
    monkeypatch.setattr(WeightGradByShifts, 'apply', lambda *a: calls.append(a) or torch.nn.functional.conv2d(*a, padding=1))
    conv = SmallMapConv(8, 8, 3, padding=1, bias=False)
    conv.by_shifts = True
    with torch.autocast('cpu', dtype=torch.bfloat16):
        conv(torch.randn(2, 8, 7, 7))
        assert len(calls) == 1
        with torch.no_grad(): conv(torch.randn(2, 8, 3, 3))  # inference
        conv(torch.randn(2, 8, 8, 8))  # a larger map
    conv(torch.randn(2, 8, 3, 3))  # fp32
    with torch.autocast('cpu', dtype=torch.float16): conv(torch.randn(2, 8, 3, 3))  # autocast, not to bf16
    conv.by_shifts = False
    with torch.autocast('cpu', dtype=torch.bfloat16): conv(torch.randn(2, 8, 3, 3))
    assert len(calls) == 1


@pytest.mark.parametrize('shape', [dict(bias=True), dict(padding=0), dict(kernel_size=5, padding=2)])
def test_small_map_conv_refuses_another_shape(shape):
    from recipe.model import SmallMapConv
    with pytest.raises(ValueError, match='SmallMapConv is a 3x3 conv with padding 1 and no bias'):
        SmallMapConv(8, 8, **(dict(kernel_size=3, padding=1, bias=False) | shape))


def test_weight_grads_by_shifts_with_the_weights_frozen():
    "A frozen weight gets no gradient, the input still the conv's own"
    from recipe.model import SmallMapConv
    torch.manual_seed(0)
    plain, shifted = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), SmallMapConv(8, 8, 3, padding=1, bias=False)
    shifted.weight.data.copy_(plain.weight.data)
    shifted.by_shifts = True
    x = torch.randn(4, 8, 3, 3)
    grads = []
    for conv in (plain, shifted):
        conv.weight.requires_grad_(False)
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16): y = conv(xi)
        y.float().pow(2).sum().backward()
        grads.append(xi.grad)
    assert 'WeightGradByShifts' in y.grad_fn.name() and shifted.weight.grad is None and torch.equal(*grads)


@pytest.mark.parametrize('size, maps', [(24, [(5, 5), (2, 2)]), (32, [(7, 7), (3, 3)])])
def test_every_conv_of_groups_2_and_3_takes_the_shifted_products_on_small_maps(size, maps, monkeypatch):
    """Depth 3 (airbench96's residual convs) and a first conv of group 3 that changes the width: at 24 and 32 pixels
    the convs on maps of 7x7 or less take the products (not group 2's first, on 11x11 or 15x15), and the whole net's
    gradients stay nn.Conv2d's to bf16's rounding"""
    from recipe.model import FastNet, SmallMapConv, WeightGradByShifts, shift_weight_grads
    torch.manual_seed(0)
    net = FastNet(10, 8, widths=(8, 24, 16), depth=3)
    assert len([m for m in net.modules() if isinstance(m, SmallMapConv)]) == 6  # groups 2-3: 3 convs each
    calls, apply = [], WeightGradByShifts.apply
    monkeypatch.setattr(WeightGradByShifts, 'apply', lambda *a: calls.append(tuple(a[0].shape[-2:])) or apply(*a))
    x, grads = torch.randn(6, 3, size, size), []
    for shifted in (False, True):
        if shifted: shift_weight_grads(net)
        net.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16): out = net(x)
        out.float().pow(2).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
    # group 2's convs after its pool, group 3's first (before its pool) and the two after it
    after_pool, last = maps
    assert calls == [after_pool] * 3 + [last] * 2
    for before, after in zip(*grads):
        assert ((after - before).norm() / before.norm()) < 2e-2
