"""Temporal sentence grounding (TSG) data layer shared by ecrl, ssrn, mgslnet, mhst and dscnet:
annotation readers, clip features, words/GloVe, a dataset, the evaluator, reference baselines and
an embedded synthetic benchmark. See common/tsg/README.md."""

from common.tsg.baselines import prior_predictions, random_predictions, reference_baselines
from common.tsg.dataset import TSGDataset, collate_tsg
from common.tsg.evaluate import METRICS, evaluate, iou
from common.tsg.features import FEATURE_DIMS, FeatureStore, MissingVideoError, resample
from common.tsg.records import Annotations, BadRecordError, Query, read_annotations
from common.tsg.text import Vocab, glove_vocab, load_glove, tokenize

__all__ = [
    "METRICS", "FEATURE_DIMS", "Annotations", "BadRecordError", "FeatureStore", "MissingVideoError", "Query",
    "TSGDataset", "Vocab", "collate_tsg", "evaluate", "iou", "load_glove", "prior_predictions",
    "random_predictions", "read_annotations", "reference_baselines", "resample", "tokenize", "glove_vocab",
]
