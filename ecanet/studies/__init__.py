"""Studies of trained and untrained models: comparisons over seeds and the kernel-size ablation, speed and
memory (``bench``), cost tables (``info``), figures, attention maps and run reports."""
