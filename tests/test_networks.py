"""The evaluation networks: structure, forward conventions, drop path, counting."""
import pytest
import torch
from torch import nn

from osep_nas import OSepConv2d, count_flops, count_params
from osep_nas.genotypes import DARTS_V2, O_DARTS, Genotype
from osep_nas.networks import (NetworkCIFAR, NetworkImageNet, check_genotype, drop_path, mobilenet, resnet_cifar,
                               scale_channels)
from osep_nas.networks.resnet import CONV_KINDS
from osep_nas.ops import OPS, Identity, OSepBlock, ReLUConvBN, register_op

from tests.test_ops import fvcore_macs, reference_macs


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- DARTS networks ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cifar():
    torch.manual_seed(0)
    return NetworkCIFAR(8, 10, 5, True, DARTS_V2)


def test_cifar_network_layout(small_cifar):
    net = small_cifar
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    assert net.stem[0].out_channels == 24  # 3C stem
    assert net.cells[2].preprocess0.__class__.__name__ == "FactorizedReduce"  # after a reduction cell
    assert isinstance(net.cells[1].preprocess0, ReLUConvBN)
    assert net.default_input_size == (3, 32, 32)


def test_forward_conventions_and_auxiliary_head(small_cifar):
    net = small_cifar
    x = torch.randn(2, 3, 32, 32)
    net.train()
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    net.eval()
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    plain = NetworkCIFAR(8, 10, 5, False, DARTS_V2).train()
    assert isinstance(plain(x), torch.Tensor)


def test_auxiliary_head_excluded_from_params_and_flops(small_cifar):
    net = small_cifar
    aux = n_params(net.auxiliary_head)
    assert aux > 0
    assert count_params(net) == n_params(net) - aux
    no_aux = NetworkCIFAR(8, 10, 5, False, DARTS_V2)
    assert count_params(no_aux) == count_params(net)
    assert count_flops(no_aux, (3, 32, 32)) == count_flops(net, (3, 32, 32))
    assert count_flops(net, (3, 32, 32)) == reference_macs(no_aux, (3, 32, 32))


def test_auxiliary_head_sees_8x8_on_cifar(small_cifar):
    seen = []
    hook = small_cifar.auxiliary_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    small_cifar.train()
    small_cifar(torch.randn(2, 3, 32, 32))
    hook.remove()
    assert seen[0][-2:] == (8, 8)


@pytest.mark.parametrize("size, stride", [(8, 3), (7, 2)])
def test_auxiliary_pool_is_darts_pool_at_its_sizes(size, stride):
    from osep_nas.networks.darts import AuxPool

    x = torch.randn(2, 4, size, size)
    assert torch.equal(AuxPool()(x), nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False)(x))


@pytest.mark.parametrize("size", [2, 3, 4, 5, 11, 16])
def test_auxiliary_pool_is_adaptive_elsewhere(size):
    from osep_nas.networks.darts import AuxPool

    x = torch.randn(2, 4, size, size)
    assert torch.equal(AuxPool()(x), nn.AdaptiveAvgPool2d(2)(x))


def test_one_auxiliary_head_for_both_networks(small_cifar):
    from osep_nas.networks.darts import AuxiliaryHead

    imagenet = NetworkImageNet(8, 5, 6, True, DARTS_V2)
    assert type(small_cifar.auxiliary_head) is type(imagenet.auxiliary_head) is AuxiliaryHead


def test_c_is_a_deprecated_name_of_init_channels():
    with pytest.warns(DeprecationWarning, match="C= is deprecated; use init_channels="):
        net = NetworkCIFAR(C=8, num_classes=10, layers=3, auxiliary=False, genotype=DARTS_V2)
    assert count_params(net) == count_params(NetworkCIFAR(8, 10, 3, False, DARTS_V2))
    with pytest.raises(TypeError, match="both C= and init_channels="):
        NetworkImageNet(C=8, init_channels=8, num_classes=10, layers=3, auxiliary=False, genotype=DARTS_V2)


def test_imagenet_network_stems_and_shapes():
    torch.manual_seed(0)
    net = NetworkImageNet(8, 1000, 5, True, DARTS_V2)
    assert net.default_input_size == (3, 224, 224)
    seen = []
    net.auxiliary_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    net.train()
    logits, aux = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == aux.shape == (2, 1000)
    assert seen[0][-2:] == (7, 7)  # DARTS places the head after the 2/3 reduction cell
    strides = [m.stride[0] for m in list(net.stem0.modules()) + list(net.stem1.modules()) if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2]
    with pytest.raises(ValueError, match="even"):
        NetworkImageNet(9, 1000, 5, False, DARTS_V2)


def test_osep_keywords_reach_every_osep_op():
    net = NetworkCIFAR(8, 10, 5, False, O_DARTS, rounding="paper", gamma=2.0)
    convs = [m for m in net.modules() if isinstance(m, OSepConv2d)]
    assert convs and all(c.plan.rounding == "paper" and c.plan.gamma == 2.0 for c in convs)
    # DARTS' own ops accept the keywords and ignore them
    NetworkCIFAR(8, 10, 5, False, DARTS_V2, rounding="paper")


def test_any_registered_op_works_in_a_genotype():
    if "test_conv_3x3" not in OPS:
        @register_op("test_conv_3x3")
        def _conv(C, stride, affine, **kw):
            return ReLUConvBN(C, C, 3, stride, 1, affine)
    ops = ["test_conv_3x3", "sosep_3x3", "osep_5x5", "osep_dil_5x5", "none", "avg_pool_3x3", "skip_connect",
           "sep_conv_5x5"]
    edges = [(ops[i], i // 2 if i % 2 else 0) for i in range(8)]
    g = Genotype(normal=edges, normal_concat=[2, 3, 4, 5], reduce=edges, reduce_concat=[4, 5])
    net = NetworkCIFAR(8, 10, 4, False, g)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, OSepBlock) for m in net.modules())


@pytest.mark.parametrize("bad, match", [
    (Genotype([("nope_3x3", 0), ("skip_connect", 1)], [2], [("skip_connect", 0), ("skip_connect", 1)], [2]), "nope"),
    (Genotype([("skip_connect", 0), ("skip_connect", 2)], [2], [("skip_connect", 0), ("skip_connect", 1)], [2]),
     "inputs 0..1"),
    (Genotype([("skip_connect", 0)], [2], [("skip_connect", 0), ("skip_connect", 1)], [2]), "two"),
    (Genotype([("skip_connect", 0), ("skip_connect", 1)], [3], [("skip_connect", 0), ("skip_connect", 1)], [2]),
     "concat"),
    ("not a genotype", "normal"),
])
def test_bad_genotypes_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        check_genotype(bad)
    with pytest.raises(ValueError):
        NetworkCIFAR(8, 10, 5, False, bad)


def test_drop_path_function():
    torch.manual_seed(0)
    x = torch.ones(1000, 2, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    assert all(v == 0.0 or abs(v - 1 / 0.75) < 1e-6 for v in per_sample.unique().tolist())
    assert 0.15 < (per_sample[:, 0] == 0).float().mean() < 0.35
    assert drop_path(x, 0.0) is x


def test_drop_path_only_in_training_and_never_on_identity():
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, False, DARTS_V2)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    net.drop_path_prob = 0.9
    a, b = net(x), net(x)
    assert torch.equal(a, b)  # eval: no drop path
    net.train()
    calls = []
    for cell in net.cells:
        for op in cell._ops:
            if isinstance(op, Identity):
                op.register_forward_hook(lambda m, i, o: calls.append(o is i[0]))
    torch.manual_seed(1)
    c = net(x)
    torch.manual_seed(2)
    d = net(x)
    assert not torch.allclose(c, d)  # random paths dropped
    assert calls and all(calls)


# -- ResNets ---------------------------------------------------------------------------------
def test_width_rounding():
    assert [scale_channels(c, 3.625) for c in (16, 32, 64)] == [58, 116, 232]
    assert [scale_channels(c, 2.72) for c in (16, 32, 64)] == [44, 87, 174]
    assert resnet_cifar(20, "osep", 3.875).widths == (62, 124, 248)
    assert scale_channels(16, 0.01) == 1


@pytest.mark.parametrize("conv", CONV_KINDS)
def test_every_conv_kind_runs_with_a_conventional_stem(conv):
    torch.manual_seed(0)
    net = resnet_cifar(8, conv, 2.72 if conv != "conv" else 1.0)
    stem = net.stem[0]
    assert type(stem) is nn.Conv2d and stem.groups == 1 and stem.kernel_size == (3, 3)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert count_params(net) == n_params(net)
    assert count_flops(net, (3, 32, 32)) == reference_macs(net, (3, 32, 32))


def test_conv_kinds_are_what_they_say():
    block = resnet_cifar(8, "dsep").layers[0]
    dw, bn, relu, pw = block.conv1
    assert dw.groups == dw.in_channels and pw.kernel_size == (1, 1) and isinstance(bn, nn.BatchNorm2d)
    block = resnet_cifar(8, "dw", 3.625).layers[1]  # 58 -> 116, stride 2
    assert block.conv1.groups == 58 and block.conv1.out_channels == 116
    block = resnet_cifar(8, "spatial").layers[0]
    assert [c.kernel_size for c in block.conv1] == [(3, 1), (1, 3)]
    block = resnet_cifar(8, "sosep").layers[0]
    assert block.conv1.plan.spatial
    assert resnet_cifar(8, "osep", gamma=4.0, rounding="paper").layers[0].conv1.plan.gamma == 4.0


def test_option_a_shortcut_has_no_parameters_and_b_has_projections():
    a = resnet_cifar(20)
    b = resnet_cifar(20, shortcut="B")
    assert n_params(b) - n_params(a) == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert b(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    odd = resnet_cifar(8, "dsep", 2.72)  # 44 -> 87 channels: zero padding of an odd count
    assert odd(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=21), "6n"), (dict(depth=20, conv="nope"), "conv"), (dict(depth=20, width_mult=0), "width_mult"),
    (dict(depth=20, shortcut="C"), "shortcut"), (dict(depth=20, num_classes=0), "num_classes"),
])
def test_resnet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet_cifar(**kwargs)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_blocks_start_as_identity_with_zero_init_residual(shortcut):
    torch.manual_seed(0)
    net = resnet_cifar(8, "osep", width_mult=2.0, shortcut=shortcut).eval()
    x = torch.randn(2, 16 * 2, 16, 16).relu()
    for block in net.layers:
        assert torch.count_nonzero(block.bn2.weight) == 0
        with torch.no_grad():
            y = block(x)
            assert torch.equal(y, torch.relu(block.shortcut(x)))
        x = y
    plain = resnet_cifar(8, "osep", width_mult=2.0, zero_init_residual=False)
    assert all(torch.all(b.bn2.weight == 1) for b in plain.layers)


def test_resnet20_flops_against_fvcore_and_flop_counter_mode():
    net = resnet_cifar(20)
    ours = count_flops(net, (3, 32, 32))
    assert ours == reference_macs(net, (3, 32, 32)) == fvcore_macs(net, (3, 32, 32))


def test_o_resnet20_flops_against_flop_counter_mode():
    for rounding in ("divisor", "paper"):
        net = resnet_cifar(20, "osep", 3.625, rounding=rounding)
        assert count_flops(net, (3, 32, 32)) == reference_macs(net, (3, 32, 32))


# -- MobileNet ----------------------------------------------------------------------------------
def test_mobilenet_structure_and_params():
    net = mobilenet()
    assert abs(count_params(net) / 4.2e6 - 1) < 0.01
    assert len(net.features) == 13
    strides = [blk[0].stride[0] for blk in net.features]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert net.stem[0].stride == (2, 2) and net.stem[0].out_channels == 32


def test_o_mobilenet_blocks_are_single_osep_blocks():
    net = mobilenet("osep")
    for blk, (out, stride) in zip(net.features, [(64, 1), (128, 2)] + [(None, None)] * 11):
        conv, bn, relu = blk
        assert isinstance(conv, OSepConv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
        if out:
            assert conv.out_channels == out and conv.stride == (stride, stride)
    assert mobilenet("sosep", 0.25).features[0][0].plan.spatial
    with pytest.raises(ValueError, match="conv"):
        mobilenet("conv")


def test_mobilenet_small_forward_and_flops():
    net = mobilenet("osep", 0.25, num_classes=7)
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    assert count_flops(net, (3, 64, 64)) == reference_macs(net, (3, 64, 64))


def test_drop_path_is_mask_over_keep_bit_for_bit():
    """One pass over x, the same numbers as x * mask / keep (DARTS' drop path), gradient too,
    including signed zeros, infinities and NaN in the dropped and kept samples."""
    x = torch.randn(64, 3, 4, 4, dtype=torch.float32)
    x[0, 0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    x[1, 0, 0, :3] = torch.tensor([-float("inf"), float("nan"), -0.0])
    x.requires_grad_()
    torch.manual_seed(7)
    got = drop_path(x, 0.3)
    torch.manual_seed(7)
    mask = torch.empty(64, 1, 1, 1).bernoulli_(0.7)
    want = x * mask / 0.7
    assert 0 < mask.sum() < 64  # some samples dropped, some kept
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    g = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])
