"""The readmission model: fixed feature space, incremental scaling and a warm-started SGD logit."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from readmission.features import FeatureSpace
from readmission.schema import POSITIVE_LABEL, TARGET


@dataclass(frozen=True)
class ModelParams:
    """SGD hyperparameters; the defaults come from `readmission tune` (see README)."""

    alpha: float = 1e-3
    epochs: int = 10
    average: bool = True
    learning_rate: str = "constant"
    eta0: float = 0.005
    seed: int = 42

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def labels(frame: pd.DataFrame) -> np.ndarray:
    """1 when the encounter was followed by a readmission within 30 days, else 0."""
    return (frame[TARGET].astype(str) == POSITIVE_LABEL).to_numpy(dtype=np.int8)


class ReadmissionModel:
    """Raw encounter columns in, P(readmitted within 30 days) out; updated batch by batch."""

    def __init__(self, params: ModelParams | None = None) -> None:
        self.params = params or ModelParams()
        self.space = FeatureSpace()
        self.scaler = StandardScaler()
        self.classifier = SGDClassifier(
            loss="log_loss",
            alpha=self.params.alpha,
            average=self.params.average,
            learning_rate=self.params.learning_rate,
            eta0=self.params.eta0,
            random_state=self.params.seed,
        )
        self.samples_seen = 0
        self.batches_seen = 0
        self.threshold = 0.5  # label cut-off, set by the training step
        # Level counts of every categorical feature over all rows trained on: the drift reference.
        self.reference_counts = [
            np.zeros(len(f.vocabulary) + 1, np.int64) for f in self.space.features
        ]

    def design_matrix(self, frame: pd.DataFrame) -> sp.csr_matrix:
        cols, nums = self.space.encode(frame)
        return self._matrix(cols, self.scaler.transform(nums))

    def _matrix(self, cols: np.ndarray, scaled: np.ndarray) -> sp.csr_matrix:
        n_rows, n_cat = cols.shape
        n_num = scaled.shape[1]
        indices = np.hstack([cols, np.tile(np.arange(n_num) + self.space.n_onehot, (n_rows, 1))])
        data = np.hstack([np.ones((n_rows, n_cat)), scaled])
        indptr = np.arange(0, n_rows * (n_cat + n_num) + 1, n_cat + n_num)
        return sp.csr_matrix(
            (data.ravel(), indices.ravel(), indptr), shape=(n_rows, self.space.n_features)
        )

    def partial_fit(self, frame: pd.DataFrame, y: np.ndarray) -> ReadmissionModel:
        """Update scaling statistics, then the classifier, with one batch."""
        cols, nums = self.space.encode(frame)
        self.scaler.partial_fit(nums)
        for position, counts in enumerate(self.reference_counts):
            counts += np.bincount(
                cols[:, position] - self.space.offsets[position], minlength=len(counts)
            )
        matrix = self._matrix(cols, self.scaler.transform(nums))
        rng = np.random.default_rng(self.params.seed + self.batches_seen)
        for _ in range(self.params.epochs):
            order = rng.permutation(len(y))
            self.classifier.partial_fit(matrix[order], y[order], classes=np.array([0, 1]))
        self.samples_seen += len(y)
        self.batches_seen += 1
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of readmission within 30 days, one per row."""
        return self.classifier.predict_proba(self.design_matrix(frame))[:, 1]

    @property
    def is_fitted(self) -> bool:
        return self.samples_seen > 0
