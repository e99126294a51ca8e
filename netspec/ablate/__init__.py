"""`netspec ablate`: a study is variants of one spec × seeds, each an ordinary training run."""
