"""netspec's benchmark suite: `python -m benchmarks` (or `make bench`) prints one table.

Each row is netspec against a reference measured in the same run — torch's own LRN,
torchvision's AlexNet and its constructor, torchvision's ImageFolder pipeline — as the median
of several interleaved repeats, so that a machine busy with other work slows both alike.
"""
