"""Published numbers we show beside our own (see shared REFERENCE.md): torchvision's weight metadata,
He et al. 2015 Tables 1 and 6, He et al. 2016 and Veit et al. 2016."""

from __future__ import annotations

# torchvision ImageNet V1 weights: parameters, GMACs at 224x224 (`_ops`), top-1.
TORCHVISION = {
    "resnet18": {"params": 11_689_512, "gmacs": 1.814, "top1": 69.758},
    "resnet34": {"params": 21_797_672, "gmacs": 3.664, "top1": 73.314},
    "resnet50": {"params": 25_557_032, "gmacs": 4.089, "top1": 76.130},
    "resnet101": {"params": 44_549_160, "gmacs": 7.801, "top1": 77.374},
    "resnet152": {"params": 60_192_808, "gmacs": 11.514, "top1": 78.312},
}

# torchinfo 1.8 total mult-adds, batch 1, 224x224.
TORCHINFO_MULT_ADDS = {
    "resnet18": 1_814_083_944,
    "resnet50": 4_089_238_376,
    "resnet152": 11_513_779_048,
}

# He et al. 2015 Table 1: "FLOPs" (multiply-adds, v1 bottleneck), in units of 1e9.
PAPER_TABLE1_GFLOPS = {
    "resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3,
}

# He et al. 2015 Table 6 (CIFAR-10, option A): parameters in millions, test error %.
PAPER_TABLE6 = {
    "cifar_resnet20": {"params_m": 0.27, "error": 8.75},
    "cifar_resnet32": {"params_m": 0.46, "error": 7.51},
    "cifar_resnet44": {"params_m": 0.66, "error": 7.17},
    "cifar_resnet56": {"params_m": 0.85, "error": 6.97},
    "cifar_resnet110": {"params_m": 1.7, "error": 6.43},
    "cifar_resnet1202": {"params_m": 19.4, "error": 7.93},
}

# He et al. 2015 Table 2: ImageNet top-1 error (10-crop) of plain vs residual nets.
PAPER_TABLE2 = {
    "plain_resnet18": 27.94, "plain_resnet34": 28.54, "resnet18": 27.88, "resnet34": 25.03,
}

# Veit et al. 2016: effective paths of CIFAR ResNet-110 (54 blocks) are 5-17 blocks long.
VEIT_EFFECTIVE_PATHS = (5, 17)
