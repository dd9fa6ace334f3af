"""The training engine every task shares: configuration, the loop (``fit``), one epoch (``engine``), processes
(``distributed``) and checkpoints that survive a crash (``checkpoint``)."""
