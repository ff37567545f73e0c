"""Floor 2: datasets (the embedded digits and MNIST-1D, CIFAR-10 and ImageFolder trees from a local path)."""
