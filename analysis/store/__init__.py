"""Floor 3: what is kept: safe weight loading, checkpoints, the run store and its store-through runner."""
