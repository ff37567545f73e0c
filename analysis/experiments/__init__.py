"""Floor 4: one experiment on one net: training, gradient flow, lesions, path ensembles, the choice of evaluation data."""
