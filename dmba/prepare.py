"""``make data`` for a real dataset: validate every annotation of both splits (one clear error
per problem, naming file and record) and fill the HDF5 density-map cache.

    python dmba/prepare.py --config dmba/configs/shb.yaml --data-root /data
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from common.cli import base_parser, parse  # noqa: E402
from dmba.config import DEFAULTS  # noqa: E402
from dmba.data import CrowdDataset, list_samples  # noqa: E402
from dmba.models import STRIDES  # noqa: E402
from dmba.train import dataset_root, density_cache  # noqa: E402


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, HERE / "configs" / "synthetic.yaml"), argv, DEFAULTS)
    root = dataset_root(cfg, args.data_root)
    for split in (cfg.dataset.train_split, cfg.dataset.test_split):
        samples = list_samples(cfg.dataset.format, root, split, cfg.data.out_of_bounds)
        ds = CrowdDataset(samples, cfg, "clean", STRIDES[cfg.model.name], "none", density_cache(cfg, args.data_root, split))
        ds.precompute()
        n = [len(s.points) for s in samples]
        print(f"{cfg.dataset.name}/{split}: {len(samples)} images, {sum(n)} heads "
              f"(min {min(n)}, mean {sum(n) / len(n):.1f}, max {max(n)}); density maps cached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
