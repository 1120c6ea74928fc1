"""ProS: prototype-based self-distillation of a face ViT (Di, Zheng, Liu, Cheng; WACV 2024; arXiv 2311.01929).

Reconstructed from the abstract; see README.md for what is the paper's and what is ours."""
