"""ECRL: transform-equivariant consistency learning for temporal sentence grounding
(Liu et al., arXiv 2305.04123), reconstructed from the abstract. See README.md."""
