"""DSCNet: unsupervised temporal video grounding with deep semantic clustering (Liu et al., AAAI 2022,
arXiv 2201.05307), reproduced from its abstract on the shared grounding layer ``common.tsg``."""
