"""DAL-GAN: heterogeneous (thermal -> visible) face frontalization via domain agnostic learning
(Di, Hu, Patel, IEEE FG 2021, arXiv 2107.08311). See README.md."""
