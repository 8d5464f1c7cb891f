"""Evaluation networks: the DARTS cell networks, CIFAR ResNets and MobileNet V1.

Every network holds ``default_input_size`` (C, H, W) and names any auxiliary head
``auxiliary_head`` so that :func:`osep_nas.count_params` / :func:`osep_nas.count_flops`
exclude it, as the paper does.
"""
from osep_nas.networks.darts import (AuxiliaryHead, Cell, DartsSkeleton, NetworkCIFAR, NetworkImageNet,
                                     check_genotype, drop_path)
from osep_nas.networks.mobilenet import MobileNetV1, mobilenet
from osep_nas.networks.resnet import CONV_KINDS, ResNetCIFAR, make_conv3x3, resnet_cifar, scale_channels

__all__ = [
    "NetworkCIFAR", "NetworkImageNet", "Cell", "DartsSkeleton", "AuxiliaryHead", "drop_path",
    "check_genotype", "resnet_cifar", "ResNetCIFAR", "make_conv3x3", "scale_channels", "CONV_KINDS",
    "mobilenet", "MobileNetV1",
]
