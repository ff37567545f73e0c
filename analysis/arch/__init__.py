"""Floor 1: architectures as data. Specs, the op registry, net and block plans, the builder, costs, counting conventions, Table 1, diagrams, residual units of spec-built and opened nets."""
