"""Evaluation of frozen and fine-tuned encoders: kNN, linear probe, few-label fine-tuning, t-SNE.

Accuracies are percentages (0-100) throughout. `knn_eval` is what training ends with; the
`fastssl eval ...` commands live in `fastssl.eval.commands`.
"""

from fastssl.eval.features import build_random_method, extract_features, load_eval_model, source_features
from fastssl.eval.fewlabel import few_label_finetune, few_label_linear
from fastssl.eval.finetune import sample_per_class
from fastssl.eval.knn import knn_accuracy, knn_classify, knn_eval
from fastssl.eval.linear import compare_backbone_projector, linear_probe
from fastssl.eval.plot import plot_tsne

__all__ = [
    "build_random_method",
    "compare_backbone_projector",
    "extract_features",
    "few_label_finetune",
    "few_label_linear",
    "knn_accuracy",
    "knn_classify",
    "knn_eval",
    "linear_probe",
    "load_eval_model",
    "plot_tsne",
    "sample_per_class",
    "source_features",
]
