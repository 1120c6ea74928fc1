"""DeepStationing (Guo et al., MICCAI 2021, arXiv 2109.09271): thoracic lymph-node-station parsing
in CT with anatomical context encoding, stratified organ segmentation and key-organ auto-search."""
