"""Floor 6: many runs compared: He et al. 2016's variant grid, transfer studies."""
