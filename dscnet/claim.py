"""DSCNet's claim testbed: one named component off at a time, 3 seeds each (common.claim), on three
embedded worlds.

The abstract claims that deep semantic clustering of the whole query set, video-based semantic
aggregation and a foreground attention branch ground queries without any video-query pair. Without
pairs, any permutation of the centres is a fixed point of the self-training, so this testbed asks
what the method can use on worlds that differ in what links words to visual patterns:

* ``default``: the v2 default set (``configs/synthetic.yaml``): word vectors and visual signatures
  unrelated; only shared statistics (concept frequency, co-occurrence, saliency) are available;
* ``aligned``: ``--aligned-space true`` (visual signatures a fixed rotation of the word vectors):
  unpaired grounding is identifiable in principle;
* ``zipf``: a long-tail world (``--zipf 1.5``): the clusters' sizes differ strongly.

Rows per world: DSCNet; without the size prior (the raw top-M of the matching scores); without the
foreground branch; the paired ceiling (the same network trained WITH pairs and boundaries: not
DSCNet). ``results.json`` of every DSCNet run also carries the training-free query-agnostic
baseline, the foreground branch alone, ``prior`` (reads train boundaries DSCNet never sees) and
``random``, and the meta diagnostics (cluster purity, selected-centre hit rate vs chance).

    python -m dscnet.claim [--seeds 0 1 2] [--variants aligned_full aligned_no_prior] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim
from common.data import data_root
from common.tsg.synthetic import generate

# the two extra worlds: <data root>/<subdir>, the generator's v2 preset with these knobs, seed 0
WORLDS = {
    "tsg_dscnet_aligned": {"aligned_space": True},
    "tsg_dscnet_zipf": {"zipf": 1.5},
}
SETS = {"default": ("synthetic", "paired"), "aligned": ("claim_aligned", "claim_aligned_paired"),
        "zipf": ("claim_zipf", "claim_zipf_paired")}


def _variants() -> dict[str, Variant]:
    out = {}
    for world, (cfg, paired) in SETS.items():
        out[f"{world}_full"] = Variant(f"[{world}] DSCNet (size prior + foreground)", cfg)
        out[f"{world}_no_prior"] = Variant(f"[{world}] without the size prior", cfg, ("dscnet.size_prior=false",))
        out[f"{world}_no_fg"] = Variant(f"[{world}] without the foreground branch", cfg, ("dscnet.foreground=false",))
        out[f"{world}_paired"] = Variant(f"[{world}] paired ceiling (pairs + boundaries; not DSCNet)", paired)
    return out


VARIANTS = _variants()


def prepare(args) -> None:
    """Generate the extra worlds once (the default set is `make -C dscnet data`'s)."""
    root = data_root(args.data_root)
    if not (root / "tsg_synthetic" / "meta.json").is_file():
        generate(root / "tsg_synthetic", seed=0)
    for sub, knobs in WORLDS.items():
        if not (root / sub / "meta.json").is_file():
            generate(root / sub, seed=0, **knobs)


METRICS = ("R1@0.5", "R1@0.7", "mIoU", "diag_event_hit", "diag_event_hit_chance", "diag_purity", "diag_selected_true",
           "diag_selected_chance")
GROUPS = {"default v2 set (word vectors and visual signatures unrelated)": [f"default_{v}" for v in
                                                                           ("full", "no_prior", "no_fg", "paired")],
          "aligned space (visual signatures a fixed rotation of the word vectors)": [f"aligned_{v}" for v in
                                                                                   ("full", "no_prior", "no_fg", "paired")],
          "long tail (zipf 1.5)": [f"zipf_{v}" for v in ("full", "no_prior", "no_fg", "paired")]}
NOTE = ("One table per world; the baseline rows are that world's (`prior` and `bow` read train boundaries and "
        "pairs DSCNet never sees; `query_agnostic` is training-free; `foreground_only` is the run's own branch). "
        "Diagnostics from the generator's meta, never used in training: `diag_event_hit` = top-1 span IoU >= 0.5 "
        "with some event of the video (queried or not), beside `diag_event_hit_chance` (the same spans at random "
        "positions); `diag_purity`; `diag_selected_true` = a video's selected centres are its events, beside "
        "`diag_selected_chance` (another video's events).")


def main(argv=None) -> int:
    # all test queries only (subsets=()): each run's per-subset numbers are in its results.json, the default
    # run's in the README's compare block
    return run_claim("dscnet", VARIANTS, argv, metrics=METRICS, prepare=prepare, groups=GROUPS, note=NOTE, subsets=(),
                     title="DSCNet claim testbed (test split, mean ± sample std over seeds)", description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
