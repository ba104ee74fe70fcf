"""Parse verified archive files into silver rows: one file, a batch, or a growing download."""
