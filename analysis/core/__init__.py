"""Floor 0: errors, bounded reading of untrusted values, atomic writes, run metadata, the results writer. Imports nothing else of the library."""
