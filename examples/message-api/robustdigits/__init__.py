"""robustdigits: a Flower / PyTorch app defended by flsec-flower's Krum inside Bucketing."""
